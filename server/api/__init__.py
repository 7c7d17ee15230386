"""The HTTP API (docs/protocol.md, /api/openapi.json): stages, recordings, clubs, health and metrics."""
