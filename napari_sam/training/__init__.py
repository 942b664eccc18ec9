"""Training utilities: synthetic data, training loop and evaluation (GUI-free)."""
