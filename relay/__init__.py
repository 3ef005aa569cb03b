"""The media plane: a WebRTC selective forwarding unit built on aiortc (never imports signaling/)."""
