"""The server (layer 4): aiohttp HTTP + WebSocket, the one dispatch table, rooms and their connections,
the chat rules, scenes, media signaling and the origin/edge cascade, and the brokers that share rooms
between nodes. It stands on the media plane (``relay``), the client library (for the cascade) and the
wire protocol; nothing below imports it."""
