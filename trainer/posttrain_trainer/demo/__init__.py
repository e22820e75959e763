"""Demonstration devices for the CPU quickstart (stand-ins, not part of the recipe)."""
