"""Priors that need training: image generators (GGL, GIAS) and learned inverters."""
