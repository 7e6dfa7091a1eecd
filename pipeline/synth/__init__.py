"""Deterministic synthetic data: chest phantoms (anatomy), the radiograph simulator, archive and file writers."""
