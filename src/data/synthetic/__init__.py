"""Embedded datasets, generated on first use so that every command runs on a fresh machine."""
