"""Training models: the states attacks target, and what a defense costs in accuracy."""
