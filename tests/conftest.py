"""Test configuration: fixtures live in plugin modules named ``fix_*.py`` beside this file.

Integration tests (marker ``integration``) start real services on free loopback ports:
PostgreSQL clusters (``fix_db``), Mosquitto, the simulator and the core (``fix_services``).
"""

pytest_plugins = ("fix_db", "fix_services")
