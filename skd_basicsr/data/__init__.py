"""Importing this package registers its modules in BasicSR's registries."""
