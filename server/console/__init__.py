"""The moderators' terminal console, a client of ``GET /console`` (docs/console.md).

Run it as ``python -m server.console``.
"""
