"""Structure tests that run inside built images (pytest-testinfra, per variant)."""
