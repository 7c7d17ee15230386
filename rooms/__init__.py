"""The stage as pure state: commands in, events out, every permission decided here.

Nothing in this package does I/O or knows about the event loop; time and ids come in as arguments.
"""
