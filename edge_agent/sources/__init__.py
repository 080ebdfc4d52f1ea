"""Where readings come from: devices in the substation."""
