"""feeds plugin (not yet implemented)."""
