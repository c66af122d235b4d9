"""Group consistency (GradInversion, Yin et al. 2021): trials pulled toward their group's mean.

Trials that attack the same update from different seeds form a group (consecutive rows of
the stacked trials). Every `every` iterations the group's mean is registered: each trial's
batch is matched to a reference batch sample by sample (the assignment with the smallest
squared distance; samples with different fixed labels are never matched), the matched
samples are averaged, and each trial gets that mean back in its own sample order as its
anchor. Until the next refresh the loss of trial k gains w · mean((x_k − a_k)²), whose
gradient 2w(x_k − a_k)/n is added in closed form: the term couples the trials only
through the detached anchors, so the stacked step stays one independent computation per
trial. The registration is a permutation only; GradInversion also aligns images spatially.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gradleak.attacks.engine.trials import RowIndex

DEFAULT_WEIGHT = 0.01
DEFAULT_EVERY = 100


@dataclass(frozen=True)
class GroupConsistency:
    """Which trials form groups and how strongly they are pulled together.

    Attributes:
        group_size: trials per group, consecutive rows (>= 2).
        weight: w, the weight of the mean squared distance to the anchor (> 0).
        every: iterations between refreshes of the anchors; the first refresh is at
            iteration `every`, so the trials first move on their own (>= 1).
    """

    group_size: int
    weight: float = DEFAULT_WEIGHT
    every: int = DEFAULT_EVERY


def registered_mean(group: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """Each trial's anchor: the group's mean after matching its samples, in its own order.

    Args:
        group: G×B×… stacked trials of one group.
        labels: G×B fixed integer labels (samples of different labels are never matched),
            or None (any sample may match any).

    Returns:
        G×B×… anchors: anchor[g, i] is the mean of the samples matched with trial g's
        sample i (trial 0 is the reference).
    """
    g, b = group.shape[:2]
    if b == 1:
        return group.mean(dim=0, keepdim=True).expand_as(group).clone()
    from scipy.optimize import linear_sum_assignment  # heavy: only batches need it

    flat = group.flatten(2)
    reference = flat[0]
    # order[g, j]: trial g's sample matched to j; the assignment is solved on the host.
    order = torch.empty(g, b, dtype=torch.long, device="cpu")
    for k in range(g):
        cost = torch.cdist(reference, flat[k]).pow(2)
        if labels is not None:
            different = labels[0].unsqueeze(1) != labels[k].unsqueeze(0)
            cost = cost.masked_fill(different, float("inf"))
        cost = torch.nan_to_num(cost, nan=1e30, posinf=1e30).cpu().numpy()
        rows, cols = linear_sum_assignment(cost)
        order[k, torch.from_numpy(rows)] = torch.from_numpy(cols).long()
    index = order.to(group.device)
    aligned = torch.stack([group[k, index[k]] for k in range(g)])
    mean = aligned.mean(dim=0)
    anchors = torch.empty_like(group)
    for k in range(g):
        anchors[k, index[k]] = mean
    return anchors


class ConsistencyTerm:
    """The consistency term of stacked trials: anchors, refreshed; loss and gradient.

    Args:
        spec: the groups and weight.
        trials: K, the stacked trials (a multiple of `spec.group_size`).
        labels: K×B fixed integer labels, or None (soft labels: samples match freely).

    Raises:
        ValueError: when K is not a multiple of the group size.
    """

    def __init__(self, spec: GroupConsistency, trials: int, labels: torch.Tensor | None) -> None:
        if spec.group_size < 2 or trials % spec.group_size:
            raise ValueError(f"{trials} trials do not split into groups of {spec.group_size}")
        self.spec = spec
        self.labels = labels
        self.anchors: torch.Tensor | None = None
        self._rows: RowIndex | None = None

    def due(self, iteration: int) -> bool:
        """Whether the anchors are refreshed before this iteration's step."""
        return iteration > 0 and iteration % self.spec.every == 0

    @torch.no_grad()
    def refresh(self, x: torch.Tensor) -> None:
        """Register every group's mean from the trials' current inputs `x` (K×B×…).

        Only trials whose inputs are finite join the mean: a diverged trial must not drag
        its group with it. A diverged trial's anchor is its own inputs (no pull).
        """
        size = self.spec.group_size
        anchors = x.clone()
        finite = torch.isfinite(x.flatten(1)).all(dim=1).tolist()
        for start in range(0, x.shape[0], size):
            rows = [start + i for i in range(size) if finite[start + i]]
            if not rows:
                continue
            labels = None if self.labels is None else self.labels[rows]
            anchors[rows] = registered_mean(x[rows], labels)
        self.anchors = anchors

    def add(
        self, x: torch.Tensor, rows: list[int] | None, grad: torch.Tensor, losses: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The running trials' gradients and losses with the term added (no anchors: as given).

        Args:
            x: all K trials' inputs.
            rows: the running trials (None: all), the rows `grad` and `losses` hold.
            grad: their gradients of the loss with respect to the inputs.
            losses: their losses.

        Returns:
            The gradients and losses with w · mean((x − a)²) and its gradient added.
        """
        if self.anchors is None:
            return grad, losses
        index = None
        if rows is not None:  # the same index tensor while the running trials are unchanged
            if self._rows is None or self._rows.device != x.device:
                self._rows = RowIndex(x.device)
            index = self._rows(rows)
        current = x if index is None else x[index]
        anchors = self.anchors if index is None else self.anchors[index]
        diff = current - anchors
        n = diff[0].numel()
        w = self.spec.weight
        term = w * diff.pow(2).flatten(1).sum(dim=1) / n
        return grad + (2 * w / n) * diff, losses + term


def spread(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Each group's mean squared distance of its trials to their registered mean (no labels).

    Args:
        x: K×B×… stacked trials, groups of `group_size` consecutive rows.
        group_size: trials per group.

    Returns:
        K / group_size values.
    """
    out = []
    for start in range(0, x.shape[0], group_size):
        group = x[start : start + group_size]
        out.append((group - registered_mean(group, None)).pow(2).mean())
    return torch.stack(out)
