"""Code shared by the exporter and the service: the Redis key scheme, the manifest, connections."""
