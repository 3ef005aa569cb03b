"""Clients of live-relay: the async client library, the command-line front ends and the browser page."""
