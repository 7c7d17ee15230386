"""A participant's or console's WebSocket: frames in, commands to the stage, events out."""
