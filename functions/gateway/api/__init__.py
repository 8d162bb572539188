"""The gateway's HTTP and WebSocket surface (Starlette)."""
