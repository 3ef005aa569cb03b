"""Signaling and the message channel: HTTP + WebSocket server, protocol, rooms, brokers."""
