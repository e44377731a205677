"""Polling: one task per gateway on its schedule, turning each source answer and its digest
into an immutable status that readers swap in whole."""
