"""Digest: pure functions from one poll's snapshot to what the exporter shows (numbers,
series budget, session lifecycle, byte counters, privacy of labels)."""
