"""Structure tests of the slim variant (runtime only)."""
