"""Structure tests of the full variant (development environment)."""
