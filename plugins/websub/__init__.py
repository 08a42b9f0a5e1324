"""websub plugin (not yet implemented)."""
