"""The only package that knows aiohttp: HTTP API, signalling WebSocket, static client, entry point."""
