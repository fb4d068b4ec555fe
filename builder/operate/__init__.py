"""Operate: nightly runs over the matrix, their reports, CI job matrices."""
