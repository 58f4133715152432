"""Data commands: simulate, prepare, inspect."""

COMMANDS: list = []
