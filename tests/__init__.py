"""The test suite: unit tests (pure, no engine) and integration tests (a real engine, registries, mirrors)."""
