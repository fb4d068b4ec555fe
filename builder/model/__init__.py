"""The model: tags, compatibility facts, the matrix, mirror profiles and the cell object."""
