"""Where readings go: the durable local buffer, then the uplink to the core."""
