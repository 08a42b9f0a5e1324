# The bridge's test fixtures (redis_url, thoonk, bridge, plugin_harness): one line.
pytest_plugins = ["thoonk_bridge.testing.pytest_plugin"]
