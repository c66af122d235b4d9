"""Optional adapters to federated-learning frameworks, each imported only by its extra."""
