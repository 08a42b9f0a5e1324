"""The operator's console (``http.console``): the page and its JSON are in :mod:`.web`, the settings in
:mod:`.settings`, the page's script and style in ``static/`` (package data)."""
