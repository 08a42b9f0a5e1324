"""Thoonk core (see docs/thoonk-keys.md)."""
