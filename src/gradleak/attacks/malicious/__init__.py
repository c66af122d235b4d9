"""Attacks of a malicious server, which alters the model it sends before the clients train."""
