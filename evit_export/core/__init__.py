"""The ground floor: the spec every artifact carries, errors, atomic writes,
preprocessing and the import-order guard. Imports nothing else of the project."""
