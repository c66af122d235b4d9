"""The matching problem: the replayed client update, the distance and the prior."""
