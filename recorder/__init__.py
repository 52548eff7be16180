"""Recorder role: sinks attempt records and dead letters into PostgreSQL and flips webhook status."""
