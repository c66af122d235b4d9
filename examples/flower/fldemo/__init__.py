"""A Flower simulation whose server is curious: the pieces of `examples/flower/run.py`.

- `settings`: the demo's configurations (FedSGD, FedAvg) and the command line.
- `data`: which images each client holds, the batch it trains on in a round, the
  held-out images the global model is scored on.
- `apps`: the `ClientApp` (with an optional `LeakageGuard`) and the `ServerApp` (a
  `CuriousStrategy` around Flower's `FedAvg`).
- `outcome`: accuracy of a global model, and the tables printed at the end.
"""
