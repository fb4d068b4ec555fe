"""Build: render a cell, build it with the engine, gate it with the smoke suite, lock it."""
