"""The package's version, defined once: pyproject.toml reads it, records carry it."""

__version__ = "0.1.0"
