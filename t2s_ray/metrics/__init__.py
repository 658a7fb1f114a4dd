"""Metrics, one per file; feature networks are passed in so tests can use tiny ones."""
