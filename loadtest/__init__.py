"""Load generators and benchmarks; they share the client library and the protocol module."""
