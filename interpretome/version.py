"""The package version, in a module of its own so every layer may import it (the package root imports all)."""

__version__ = "0.1.0"
