"""Charge point station daemon."""

__version__ = "0.1.0"
