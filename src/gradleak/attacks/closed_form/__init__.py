"""Attacks solved in closed form from the gradients: no iterations, no restarts."""
