"""Integration tests: a real Docker engine, loopback registries and PyPI mirrors (the sandbox)."""
