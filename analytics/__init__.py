"""Conversion analytics: events, their storage (SQLite or PostgreSQL), the writer and the reports."""
