"""A study's dataset: reading, checks, text-column encoding, scaling (operator and trainer)."""
