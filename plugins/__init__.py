"""Built-in plugins, installed as ``thoonk_bridge.plugins.<name>``.

Each one is also declared in the ``thoonk_bridge.plugins`` entry-point group, exactly as a
third-party plugin would be, so discovery treats built-in and outside plugins the same way.
"""
