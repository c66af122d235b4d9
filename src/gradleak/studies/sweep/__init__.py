"""Sweeps: a product of settings, one resumable run directory per cell."""
