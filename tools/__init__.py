"""Developer and maintainer tools, apart from the product: the loopback sandbox, the compat refresh."""
