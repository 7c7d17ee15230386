"""The moderators' terminal console, a client of ``GET /console`` (docs/console.md).

``python -m server.console`` runs it (``__main__``). ``model`` (the stages as their feeds tell them),
``feed`` (a line per event, tables) and ``commands`` (a command line to a wire request, completion)
are plain code; ``shell`` (sockets, the command loop) and ``prompt`` (prompt_toolkit, the optional
``[console]`` extra) are the I/O around them. A client: it imports nothing of the server's own wings.
"""
