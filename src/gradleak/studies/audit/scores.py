"""An audit's scores: per item, per attack, overall, and the verdict with its gates.

An item is one private image (or sentence) of one attacked update. For images, each item
is scored by PSNR and SSIM against the original and against a no-information baseline, the
dataset's mean image: the relative leakage is how far the reconstruction closes the gap
between that baseline and a perfect copy,

    leakage = (SSIM(x̂, x) − SSIM(x̄, x)) / (1 − SSIM(x̄, x)),

0 for a reconstruction no more like the image than the mean image is, 1 for an exact copy,
negative for one less alike (the idea of NVFlare's relative data leakage value; images
below the 11×11 SSIM window use 1 − MSE(x̂, x)/MSE(x̄, x) instead). An image counts as
recognisably reconstructed when its SSIM reaches `RECOGNISABLE_SSIM`. For text, an item is a
sentence: its ROUGE-1 against the original and whether it was recovered exactly; the
baseline is the sentence made of the most frequent words (unigram text), and a sentence is
recognisable when its ROUGE-1 reaches `RECOGNISABLE_ROUGE1`.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from gradleak.studies.audit.settings import Gate

# SSIM at which a reconstruction counts as recognisable. At 0.5 the outline and the large
# structures of a face or an object are plainly there in our image grids; reconstructions
# below about 0.3 read as noise or as a blur of the mean image.
RECOGNISABLE_SSIM = 0.5
# Images too small for SSIM: PSNR in dB at which they count as recognisable.
RECOGNISABLE_PSNR = 25.0
# Text: ROUGE-1 at which a recovered sentence counts as recognisable (half its words).
RECOGNISABLE_ROUGE1 = 0.5
# Labels count as leaking when the best attack recovers at least this share of them.
LABELS_LEAK = 0.5


@dataclass(frozen=True)
class ItemScore:
    """One private item of one attacked update under one attack.

    Attributes:
        attack: the attack's name.
        sample: which attacked update (0-based).
        position: the item's place in that update's batch.
        data_index: the item's index in the dataset.
        psnr, ssim: image scores against the original (None for text, SSIM None for
            images below the SSIM window).
        rouge1, exact: text scores (None for images).
        leakage: the relative leakage against the no-information baseline.
        recognisable: whether it counts as recognisably reconstructed.
        label_correct: whether the attack recovered its label (None where the attack
            recovers no labels).
    """

    attack: str
    sample: int
    position: int
    data_index: int
    leakage: float
    recognisable: bool
    label_correct: bool | None = None
    psnr: float | None = None
    ssim: float | None = None
    rouge1: float | None = None
    exact: bool | None = None


def image_leakage(
    psnr: float, ssim: float | None, mse: float, base_ssim: float | None, base_mse: float
) -> tuple[float, bool]:
    """Relative leakage and recognisability of one image (see the module's docstring).

    Args:
        psnr: the reconstruction's PSNR against the original, dB.
        ssim: its SSIM (None below the SSIM window).
        mse: its mean squared error.
        base_ssim: the mean image's SSIM against the original (None below the window).
        base_mse: the mean image's mean squared error against the original.

    Returns:
        (leakage, recognisable).
    """
    if ssim is None or base_ssim is None:
        leakage = 1.0 - mse / base_mse if base_mse > 0 else 0.0
        return leakage, psnr >= RECOGNISABLE_PSNR
    gap = 1.0 - base_ssim
    leakage = (ssim - base_ssim) / gap if gap > 1e-12 else 0.0
    return leakage, ssim >= RECOGNISABLE_SSIM


def text_leakage(rouge1: float, base_rouge1: float) -> tuple[float, bool]:
    """Relative leakage and recognisability of one sentence from its ROUGE-1 scores."""
    gap = 1.0 - base_rouge1
    leakage = (rouge1 - base_rouge1) / gap if gap > 1e-12 else 0.0
    return leakage, rouge1 >= RECOGNISABLE_ROUGE1


@dataclass
class AttackSummary:
    """One attack's part of the audit.

    Attributes:
        attack: the registry name.
        purpose: why it is in the audit.
        status: "ran", "stopped" (the budget ended it early), "skipped" (does not apply or
            no time left) or "failed" (it raised; the audit went on).
        reason: why it was skipped or how it failed.
        options: the settings the audit gave it.
        iterations: the iterations each trial ran (0 for closed forms).
        seconds: wall time, calibration included.
        items: the items scored.
        scores: the summary scores (`summarise`), empty unless it ran.
    """

    attack: str
    purpose: str
    status: str
    reason: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    iterations: int = 0
    seconds: float = 0.0
    items: int = 0
    scores: dict[str, float | None] = field(default_factory=dict)

    @property
    def ran(self) -> bool:
        return self.status in ("ran", "stopped")


def _median(values: Sequence[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _max(values: Sequence[float]) -> float | None:
    return float(max(values)) if values else None


def summarise(items: Sequence[ItemScore]) -> dict[str, float | None]:
    """Summary scores of one attack's items (the keys `--fail-above` reads, and more).

    Args:
        items: the attack's scored items.

    Returns:
        labels (share recovered, None where no labels were recovered), psnr / ssim /
        rouge1 medians with their worst case (the best-reconstructed item, "worst-…"),
        leakage median and worst case, recognisable and exact shares (None where they do
        not apply).
    """
    labels = [i.label_correct for i in items if i.label_correct is not None]
    psnrs = [i.psnr for i in items if i.psnr is not None]
    ssims = [i.ssim for i in items if i.ssim is not None]
    rouges = [i.rouge1 for i in items if i.rouge1 is not None]
    exact = [i.exact for i in items if i.exact is not None]
    leakage = [i.leakage for i in items]
    return {
        "labels": sum(labels) / len(labels) if labels else None,
        "psnr": _median(psnrs),
        "worst-psnr": _max(psnrs),
        "ssim": _median(ssims),
        "worst-ssim": _max(ssims),
        "rouge1": _median(rouges),
        "exact": sum(exact) / len(exact) if exact else None,
        "recognisable": sum(i.recognisable for i in items) / len(items) if items else None,
        "leakage": _median(leakage),
        "worst-leakage": _max(leakage),
    }


def overall(attacks: Sequence[AttackSummary], items: Sequence[ItemScore]) -> dict[str, Any]:
    """The audit's overall row: the strongest attack per score.

    Every score is the highest any attack reached, except `recognisable` and `exact`,
    which count the items that at least one attack reconstructs recognisably (exactly).

    Args:
        attacks: the attacks' summaries.
        items: every attack's scored items.

    Returns:
        The scores of `summarise` plus `items` (distinct private items attacked) and, per
        score, the attack that reached it (`by`).
    """
    ran = [a for a in attacks if a.ran and a.scores]
    row: dict[str, Any] = {}
    by: dict[str, str] = {}
    for key in (
        "labels",
        "psnr",
        "worst-psnr",
        "ssim",
        "worst-ssim",
        "rouge1",
        "leakage",
        "worst-leakage",
    ):
        values = [(a.scores[key], a.attack) for a in ran if a.scores.get(key) is not None]
        best = max(values, default=None, key=lambda pair: pair[0])
        row[key] = None if best is None else best[0]
        if best is not None:
            by[key] = best[1]
    distinct: dict[tuple[int, int], list[ItemScore]] = {}
    for item in items:
        distinct.setdefault((item.sample, item.position), []).append(item)
    row["items"] = len(distinct)
    row["recognisable"] = (
        sum(any(i.recognisable for i in group) for group in distinct.values()) / len(distinct)
        if distinct
        else None
    )
    exact_groups = [g for g in distinct.values() if any(i.exact is not None for i in g)]
    row["exact"] = (
        sum(any(bool(i.exact) for i in g) for g in exact_groups) / len(exact_groups)
        if exact_groups
        else None
    )
    row["by"] = by
    return row


@dataclass(frozen=True)
class Verdict:
    """The audit's answer in one word and one sentence, and the gates' results.

    Attributes:
        level: "LEAKS", "LABELS LEAK", "NO LEAK FOUND" or "NOT MEASURED" (no attack ran).
        summary: one sentence saying why.
        failed: the gates whose score exceeded their limit.
        unmet: gates whose score no attack produced. They fail too: a gate that measured
            nothing cannot vouch for the setup.
    """

    level: str
    summary: str
    failed: tuple[Gate, ...] = ()
    unmet: tuple[Gate, ...] = ()

    @property
    def passed(self) -> bool:
        return not self.failed and not self.unmet


def verdict(
    row: Mapping[str, Any], attacks: Sequence[AttackSummary], gates: Sequence[Gate], budget: str
) -> Verdict:
    """The verdict on the overall row, and which gates fail.

    Args:
        row: the overall row (`overall`).
        attacks: the attacks' summaries (named in the sentence).
        gates: the `--fail-above` rules.
        budget: the budget as written, for the sentence.

    Returns:
        The verdict.
    """
    ran = [a.attack for a in attacks if a.ran]
    recognisable = row.get("recognisable") or 0.0
    items = row.get("items", 0)
    if not ran:
        level = "NOT MEASURED"
        summary = "no attack ran, so the audit measured nothing; see why each did not run"
    elif recognisable > 0:
        count = round(recognisable * items)
        best = row["by"].get("worst-leakage", "an attack")
        level = "LEAKS"
        summary = (
            f"{count} of {items} private items were reconstructed recognisably; the "
            f"strongest attack was {best}"
        )
    elif (row.get("labels") or 0.0) >= LABELS_LEAK:
        level = "LABELS LEAK"
        summary = (
            f"no item was reconstructed recognisably, but {row['labels']:.0%} of the labels "
            f"were recovered (by {row['by'].get('labels')})"
        )
    else:
        level = "NO LEAK FOUND"
        summary = (
            f"no item was reconstructed recognisably by {', '.join(ran) or 'any attack'} "
            f"within {budget}; stronger attacks or more time may still succeed"
        )
    failed, unmet = [], []
    for gate in gates:
        value = row.get(gate.key)
        if value is None:
            unmet.append(gate)
        elif value > gate.limit:
            failed.append(gate)
    return Verdict(level, summary, tuple(failed), tuple(unmet))
