"""Development tooling: real redis-server and uvicorn processes on loopback ports, for tests,
benchmarks and the demo. Not part of what the exporter and the service share (core/)."""
