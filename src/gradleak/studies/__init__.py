"""Studies that run many attacks: sweeps, comparisons, trade-offs, label studies, peers."""
