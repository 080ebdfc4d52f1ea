"""Pure transforms between sources and the buffer: no I/O, called by the agent and the tests."""
