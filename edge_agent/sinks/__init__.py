"""Where readings go: the durable local buffer, then the uplink to the core.

``bandwidth`` paces the uplink when ``uplink.max_bytes_per_second`` caps it.
"""
