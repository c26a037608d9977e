"""Inline checks, one module each. Pure functions of text and policy: no I/O, no models."""
