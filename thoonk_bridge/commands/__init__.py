"""The ``thoonk-bridge`` subcommands that are more than a few lines, one module each; ``thoonk_bridge.cli``
assembles them."""
