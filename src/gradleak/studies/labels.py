"""Label strategies on their own: recover the labels of many FedSGD batches and score them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradleak.attacks.labels import LABEL_STRATEGIES
from gradleak.core import PrivateBatch
from gradleak.core.device import CPU
from gradleak.core.errors import GradleakError
from gradleak.core.files import write_atomically
from gradleak.core.knowledge import DataFacts, Requirement, grant_knowledge
from gradleak.data import DatasetSpec, get_dataset_spec, open_images
from gradleak.fl.protocols import ProtocolSettings
from gradleak.models import build_model, load_checkpoint
from gradleak.models.user import is_factory_spec, output_classes
from gradleak.report.tables import write_csv

DEFAULT_STRATEGIES = ("analytic", "sign", "yin", "count")


@dataclass(frozen=True)
class LabelScore:
    """How one recovered label multiset compares with the true one."""

    set_exact: bool  # the predicted set of present classes equals the true set
    precision: float  # predicted classes that are present
    recall: float  # present classes that were predicted
    count_accuracy: float  # Σ_c min(predicted_c, true_c) / B: samples whose label is accounted for


def score_labels(predicted: torch.Tensor, true: torch.Tensor, num_classes: int) -> LabelScore:
    """Score predicted labels against the true ones as sets and as multisets (counts)."""
    if predicted.shape != true.shape:
        raise GradleakError(
            f"predicted labels have shape {tuple(predicted.shape)} but the batch has "
            f"{tuple(true.shape)}; give one label per sample"
        )
    # Scored on the CPU, whichever device the labels were recovered on.
    pred_counts = torch.bincount(predicted.long().cpu(), minlength=num_classes)
    true_counts = torch.bincount(true.long().cpu(), minlength=num_classes)
    pred_set, true_set = pred_counts > 0, true_counts > 0
    hits = int((pred_set & true_set).sum())
    return LabelScore(
        set_exact=bool(torch.equal(pred_set, true_set)),
        precision=hits / max(1, int(pred_set.sum())),
        recall=hits / max(1, int(true_set.sum())),
        count_accuracy=int(torch.minimum(pred_counts, true_counts).sum()) / int(true.numel()),
    )


@dataclass(frozen=True)
class LabelRow:
    """Mean scores of one strategy at one batch size, over `batches` batches."""

    model: str
    dataset: str
    state: str  # "untrained" or the checkpoint's file name
    strategy: str
    batch_size: int
    batches: int
    set_exact: float
    precision: float
    recall: float
    count_accuracy: float


def _summarise(scores: Sequence[LabelScore]) -> dict[str, float]:
    n = len(scores)
    return {
        "set_exact": sum(s.set_exact for s in scores) / n,
        "precision": sum(s.precision for s in scores) / n,
        "recall": sum(s.recall for s in scores) / n,
        "count_accuracy": sum(s.count_accuracy for s in scores) / n,
    }


def _applicable(strategy: str, batch_size: int) -> bool:
    # iDLG's analytic label is only defined for one sample; it is skipped at larger batches.
    requires = LABEL_STRATEGIES[strategy].requires
    return Requirement.SINGLE_SAMPLE not in requires or batch_size == 1


def check_strategies(strategies: Sequence[str]) -> tuple[str, ...]:
    """The names, checked: each must be a label strategy that recovers labels."""
    # Label-free strategies only: granted labels are no result, and 'optimize' returns none.
    usable = [
        n
        for n, s in LABEL_STRATEGIES.items()
        if s.recovers and s.fixed and s.requires <= {Requirement.SINGLE_SAMPLE}
    ]
    for name in strategies:
        if name not in usable:
            raise GradleakError(
                f"label strategy {name!r} cannot be evaluated alone; choose from: "
                f"{', '.join(usable)}"
            )
    if not strategies:
        raise GradleakError(f"no label strategies given; choose from: {', '.join(usable)}")
    return tuple(strategies)


def evaluate_label_recovery(
    model_name: str,
    dataset: str,
    data_root: Path,
    *,
    batch_sizes: Sequence[int] = (1, 8, 32, 64),
    batches: int = 20,
    strategies: Sequence[str] = DEFAULT_STRATEGIES,
    checkpoint: Path | None = None,
    seed: int = 0,
    model_args: Mapping[str, Any] | None = None,
    device: torch.device = CPU,
) -> list[LabelRow]:
    """Draw batches with replacement from the test split, compute FedSGD gradients, score.

    Args:
        model_name: a registry model, or a factory spec (MODULE:FACTORY) whose model has
            one logit per class of the dataset.
        dataset: cifar10, cifar100 or mnist.
        data_root: the folder holding the dataset's files.
        batch_sizes: the batch sizes studied.
        batches: batches drawn per batch size.
        strategies: label strategies that recover labels from the update alone.
        checkpoint: a model state to load (default: the seeded untrained model).
        seed: the model's initialisation and the draws.
        model_args: keyword arguments of a factory spec.
        device: where the model and batches compute (the model is built and seeded on
            the CPU and moved once; batches are drawn on the CPU and moved one by one).

    Returns:
        One row per strategy and batch size with the mean scores over the batches (iDLG's
        analytic label only at batch size 1).

    Raises:
        GradleakError: an unknown or unusable strategy, non-positive sizes, missing data.
    """
    strategies = check_strategies(strategies)
    if batches < 1 or any(b < 1 for b in batch_sizes) or not batch_sizes:
        raise GradleakError("batch sizes and the number of batches must be positive integers")
    spec = get_dataset_spec(dataset)
    images = open_images(dataset, data_root, "test")
    model: nn.Module = build_model(
        model_name,
        num_classes=spec.num_classes,
        in_channels=spec.channels,
        image_size=spec.image_size,
        seed=seed,
        model_args=model_args,
    )
    _check_classes(model, model_name, spec)
    state = "untrained"
    if checkpoint is not None:
        load_checkpoint(model, checkpoint)
        state = Path(checkpoint).name
    model.to(device)
    generator = torch.Generator().manual_seed(seed)
    facts = DataFacts(
        (spec.channels, *spec.image_size), spec.num_classes, spec.mean, spec.std, dataset
    )
    fedsgd = ProtocolSettings()  # one FedSGD client in train mode; nothing else is granted
    rows: list[LabelRow] = []
    for batch_size in batch_sizes:
        scores: dict[str, list[LabelScore]] = {s: [] for s in strategies}
        for _ in range(batches):
            draw = torch.randint(len(images), (batch_size,), generator=generator, device="cpu")
            pixels, labels = images.normalized(draw.tolist())
            batch = PrivateBatch(pixels.to(device), labels.to(device))
            knowledge = grant_knowledge(facts, batch.labels, fedsgd)
            update = fedsgd.client(model).compute_update(batch)
            for name in strategies:
                if not _applicable(name, batch_size):
                    continue
                predicted = LABEL_STRATEGIES[name].recover(update, model, knowledge)
                assert predicted is not None  # check_strategies keeps label-returning ones
                scores[name].append(score_labels(predicted, batch.labels, spec.num_classes))
        for name in strategies:
            if scores[name]:
                rows.append(
                    LabelRow(
                        model_name,
                        dataset,
                        state,
                        name,
                        batch_size,
                        batches,
                        **_summarise(scores[name]),
                    )
                )
    return rows


def _check_classes(model: nn.Module, name: str, spec: DatasetSpec) -> None:
    """Refuse a factory's model without one logit per class of the dataset (one line)."""
    if not is_factory_spec(name):
        return  # a registry model is built with the dataset's classes
    classes = output_classes(model, spec.channels, spec.image_size, name=name.strip())
    if classes != spec.num_classes:
        raise GradleakError(
            f"model {name.strip()} outputs {classes} classes but {spec.name} has "
            f"{spec.num_classes}; the label study scores one logit per class: give it "
            f"{spec.num_classes} (e.g. --model-arg num_classes={spec.num_classes})"
        )


_FIELDS = tuple(LabelRow.__dataclass_fields__)


def write_label_results(rows: Sequence[LabelRow], out: Path) -> tuple[Path, Path]:
    """Write rows to OUT/labels.csv and a markdown table to OUT/labels.md."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "labels.csv", out / "labels.md"
    write_csv(csv_path, _FIELDS, [asdict(row) for row in rows])
    write_atomically(md_path, label_table(rows))
    return csv_path, md_path


def label_table(rows: Sequence[LabelRow]) -> str:
    """Markdown table: exact-set match, precision, recall and count accuracy per row."""
    lines = [
        "| model | dataset | state | strategy | B | batches | set exact | precision | recall "
        "| count acc |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.dataset} | {r.state} | {r.strategy} | {r.batch_size} | "
            f"{r.batches} | {r.set_exact:.2f} | {r.precision:.2f} | {r.recall:.2f} | "
            f"{r.count_accuracy:.2f} |"
        )
    return "\n".join(lines) + "\n"
