"""Offline tests of the agency adapters."""
