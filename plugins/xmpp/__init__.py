"""xmpp plugin (not yet implemented)."""
