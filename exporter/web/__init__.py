"""Web: the aiohttp application, its server limits and auth, and what it serves from the
pollers' statuses (/metrics families and cached bodies, /sessions, the landing page)."""
