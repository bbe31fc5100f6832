"""Shared helpers (data-directory I/O, ...)."""
