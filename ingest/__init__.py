"""ctr-ingest: applies behaviour events from Redis Streams to users' live histories."""
