"""Sync core: parsed events, the mirror tables, the ledger and the one event pipeline."""
