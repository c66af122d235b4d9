"""The client's private data: never shared, seen only by the client and the evaluation side."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PrivateBatch:
    """The client's data: normalised images B×C×H×W and integer labels. Never shared."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])
