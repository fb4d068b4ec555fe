"""The model: names (tags, references, labels), compatibility facts, the matrix, profiles, the cell."""
