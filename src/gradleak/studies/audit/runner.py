"""Run an audit: simulate the clients' updates, run every attack that applies within the
time budget, score what each recovers and reach a verdict.

The budget covers the whole audit. The clients' updates are simulated first (one per
sample); closed-form attacks then run at once, and the optimisation attacks share what is
left by their weights (`selection.CANDIDATES`). An Adam attack, whose step sizes follow a
schedule over its iterations, is timed on short runs and given the iterations that fit
its share (never more than its preset's), all samples' trials optimised as one stack
(`reconstruct_many`); a deadline stops it should the estimate be too generous. L-BFGS
attacks the samples in turn, each until the end of its slice of the share; closed forms
take no share.

The attacks see only the server's view and the shared updates; the truth reaches only the
scoring. An attack that raises is reported as failed and the audit goes on; Ctrl-C or
SIGTERM ends the audit with what was attacked so far.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from gradleak import attacks
from gradleak.attacks.engine.hooks import Observer, deadline_observer
from gradleak.attacks.engine.time_fit import iterations_that_fit, measure_steps
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.device import module_device
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.data import FILE_DATASETS, open_images
from gradleak.data.text import BUNDLED_SENTENCES, read_sentences
from gradleak.metrics import Evaluation
from gradleak.metrics.image import mse, ssim, ssim_supported
from gradleak.metrics.text import TextEvaluation
from gradleak.scenario.case import Case, ServerView
from gradleak.scenario.observe import score
from gradleak.scenario.plan import plan_run
from gradleak.scenario.run import attacked_view
from gradleak.studies.audit.labels import LabelReading
from gradleak.studies.audit.scores import (
    AttackSummary,
    ItemScore,
    Verdict,
    image_leakage,
    overall,
    summarise,
    text_leakage,
    verdict,
)
from gradleak.studies.audit.selection import AuditTarget, Selected, select_attacks
from gradleak.studies.audit.settings import AuditSettings
from gradleak.studies.labels import score_labels

# An attack every update of the modality can be planned with (plan_run needs one).
STAND_IN = {"image": "ig", "text": "tokens"}
# Optimisers whose step sizes follow a schedule over the planned iterations: they are
# timed and given the iterations that fit. The others (L-BFGS) run until their deadline.
_SCHEDULED = frozenset({"adam"})
# Fewest iterations worth running: below this an attack is skipped as out of budget.
MIN_ITERATIONS = {"adam": 20}
# Of the budget left, what a closed form that searches (SPEAR, `time_limit`) may spend on
# all samples together; the optimisation attacks share what it leaves.
CLOSED_FORM_SHARE = 0.25
# Iterations between the deadline's checks (each check reads the losses: one device sync).
_LOG_EVERY = {"adam": 10, "lbfgs": 1}
# Kept back for scoring and writing the outputs: seconds plus a share of the budget.
RESERVE_SECONDS = 2.0
RESERVE_SHARE = 0.03
# The mean image is taken over at most this many images of the dataset.
_BASELINE_IMAGES = 2000
# The worst reconstructions shown beside their originals.
WORST_SHOWN = 8


@dataclass(frozen=True)
class AuditSample:
    """One attacked client update and the truth behind it.

    Attributes:
        index: the sample's number.
        case: the built case (its client part is the truth, for scoring only).
        update: the shared update.
        view: the server's view the attacks get.
        data_indices: the dataset indices of the update's private items.
    """

    index: int
    case: Case
    update: SharedUpdate
    view: ServerView
    data_indices: tuple[int, ...]


@dataclass(frozen=True)
class Shown:
    """One of the worst reconstructions: the original beside what the attack made of it.

    Attributes:
        attack: the attack's name.
        item: the item's scores.
        original: the private image (C×H×W in [0, 1]) or sentence.
        recovered: what the attack recovered of it, of the same kind.
    """

    attack: str
    item: ItemScore
    original: torch.Tensor | str
    recovered: torch.Tensor | str


@dataclass
class AuditResult:
    """What an audit found.

    Attributes:
        settings: the audit's settings.
        attacks: one summary per candidate attack (ran, stopped, skipped or failed).
        items: every attack's scored items.
        overall: the overall row (`scores.overall`).
        verdict: the verdict and the gates' results.
        seconds: the audit's wall time.
        setup_seconds: the part spent building the cases and simulating the clients.
        interrupted: Ctrl-C or SIGTERM ended it early.
        worst: the worst reconstructions, most leaking first.
        description: the audited setup in words.
        device: the device the audit ran on.
    """

    settings: AuditSettings
    attacks: list[AttackSummary]
    items: list[ItemScore]
    overall: dict
    verdict: Verdict
    seconds: float
    setup_seconds: float
    interrupted: bool = False
    worst: list[Shown] = field(default_factory=list)
    description: str = ""
    device: str = "cpu"


class _Clock:
    """The audit's budget: when it ends and what is left of it."""

    def __init__(self, budget: float) -> None:
        self.start = time.monotonic()
        self.end = self.start + budget

    def left(self) -> float:
        return self.end - time.monotonic() - self.reserve

    @property
    def reserve(self) -> float:
        # Scoring and writing grow with the audit; a deadline also ends an attack only at
        # its next check.
        return RESERVE_SECONDS + RESERVE_SHARE * (self.end - self.start)

    def elapsed(self) -> float:
        return time.monotonic() - self.start


def _samples(settings: AuditSettings, clock: _Clock) -> list[AuditSample]:
    """Simulate one client update per sample, each from its own private items.

    Images are drawn without replacement in a seeded order (`draw_indices`), so that the
    updates of data stored class by class hold several classes, as real clients' do.
    """
    run = settings.run
    # The run's attack is only a stand-in for planning (the audit picks its attacks).
    stand_in = STAND_IN[run.modality]
    draws = draw_indices(settings)
    samples = []
    for i, indices in enumerate(draws):
        config = dataclasses.replace(
            run, attack=stand_in, indices=tuple(indices), attack_options={}
        )
        # The model is the same for every sample (it is seeded by the run's seed); each
        # client draws its own noise (defenses) from its own seed.
        plan = dataclasses.replace(plan_run(config), seed=run.seed + i)
        case, update, view = attacked_view(plan)
        samples.append(AuditSample(i, case, update, view, tuple(plan.data.indices)))
        _check_budget(clock, settings, clock.elapsed())
    return samples


def draw_indices(settings: AuditSettings) -> list[list[int]]:
    """The dataset indices of each sample's private items.

    Images: a seeded permutation of the dataset (`--seed`), cut into samples of batch size ×
    users items. Text: consecutive sentences, as `gradleak attack` takes them.

    Raises:
        GradleakError: the data holds fewer items than the samples need.
    """
    run = settings.run
    n = run.total_samples
    if run.modality != "image":
        return [list(range(i * n, (i + 1) * n)) for i in range(settings.samples)]
    size = len(open_images(run.dataset, run.data_root, run.split, run.image_size))
    need = settings.samples * n
    if need > size:
        raise GradleakError(
            f"{settings.samples} samples of {n} images need {need} images but the data holds "
            f"{size}; give fewer --samples or a smaller --batch-size"
        )
    order = torch.randperm(size, generator=torch.Generator().manual_seed(run.seed)).tolist()
    return [order[i * n : (i + 1) * n] for i in range(settings.samples)]


def _check_budget(clock: _Clock, settings: AuditSettings, setup: float) -> None:
    """Refuse a budget that cannot run any attack once the updates are simulated."""
    if clock.left() <= 0:
        least = math.ceil((setup + RESERVE_SECONDS + 1) / (1 - RESERVE_SHARE))
        raise GradleakError(
            f"--budget {settings.budget:g}s is too small: simulating the {settings.samples} "
            f"client update(s) took {setup:.1f} s and scoring and writing need about "
            f"{clock.reserve:.0f} s; give --budget {least}s or more, or fewer --samples"
        )


def _optimizer(attack: attacks.Attack) -> str | None:
    """ "adam" or "lbfgs" for an optimisation attack, None for a closed form."""
    if attack.config.iterations <= 0:
        return None
    return str(getattr(attack.config, "optimizer", "adam"))


def _time_limited(attack: attacks.Attack, seconds: float) -> attacks.Attack:
    """A closed form that searches, held to `seconds` per sample; any other as it is."""
    if "time_limit" not in {f.name for f in dataclasses.fields(attack.config)}:
        return attack
    # At least a moment: a spent budget still lets the search solve what it has.
    return attack.with_options({"time_limit": max(seconds, 0.1)})


def _reconstruct(
    attack: attacks.Attack,
    samples: Sequence[AuditSample],
    seed: int,
    deadline: Callable[[int], Observer | None],
) -> list[Reconstruction]:
    """Attack every sample: stacked with Adam, else one after another.

    `deadline(i)` gives sample i's observer (the stack's for Adam: i = number of samples).
    """
    view = samples[0].view
    many = getattr(attack, "reconstruct_many", None)
    if _optimizer(attack) == "adam" and many is not None:
        return many(
            [s.update for s in samples],
            view.model,
            view.knowledge,
            seed=seed,
            progress=False,
            observer=deadline(len(samples)),
        )
    results = []
    for s in samples:
        one = attack.reconstruct(
            s.update,
            s.view.model,
            s.view.knowledge,
            seed=seed,
            observer=deadline(s.index + 1),
            progress=False,
        )
        results.append(one)
        if one.interrupted:
            break
    return results


def _timed(
    attack: attacks.Attack, samples: Sequence[AuditSample], seed: int, iterations: int
) -> float:
    start = time.monotonic()
    quick = attack.with_options({"iterations": iterations})
    results = _reconstruct(quick, samples, seed, lambda _: None)
    if any(r.interrupted for r in results):
        raise KeyboardInterrupt
    return time.monotonic() - start


def _plan_iterations(
    attack: attacks.Attack, samples: Sequence[AuditSample], seed: int, share: float
) -> tuple[int, float]:
    """Time short runs and return the iterations that fit `share`, and the time spent.

    The deadline stops the attack at its full share should the estimate be too generous.
    """
    timing = measure_steps(lambda n: _timed(attack, samples, seed, n))
    left = share - timing.spent
    fits = iterations_that_fit(timing.per_iteration, left, most=attack.config.iterations)
    return fits, timing.spent


def _score_attack(
    name: str,
    samples: Sequence[AuditSample],
    results: Sequence[Reconstruction],
    baseline: Baseline,
) -> tuple[list[ItemScore], list[Shown]]:
    """Score each sample's reconstruction item by item; also the pictures to show."""
    items: list[ItemScore] = []
    shown: list[Shown] = []
    for sample, reconstruction in zip(samples, results, strict=False):
        evaluation = score(sample.view, sample.case.client.batch, reconstruction)
        if baseline.mean_image is None:
            found, pictures = _text_items(name, sample, evaluation, baseline.words)
        else:
            found, pictures = _image_items(
                name, sample, reconstruction, evaluation, baseline.mean_image
            )
        items.extend(found)
        shown.extend(pictures)
    return items, shown


def _image_items(
    name: str,
    sample: AuditSample,
    reconstruction: Reconstruction,
    evaluation: Evaluation,
    mean_image: torch.Tensor,
) -> tuple[list[ItemScore], list[Shown]]:
    view, truth = sample.view, sample.case.client.batch
    originals = view.decode(truth.images)
    recovered = view.decode(reconstruction.images)
    base_ssim, base_mse = _baseline_scores(mean_image, originals)
    labels = reconstruction.labels if reconstruction.labels_recovered else None
    items, shown = [], []
    for position, row in enumerate(evaluation.per_image):
        j = row["matched_reconstruction"]
        leakage, recognisable = image_leakage(
            row["psnr"], row["ssim"], row["mse"], base_ssim[position], base_mse[position]
        )
        correct = None if labels is None else int(labels[j]) == int(truth.labels[position])
        item = ItemScore(
            name,
            sample.index,
            position,
            sample.data_indices[position],
            leakage,
            recognisable,
            correct,
            psnr=row["psnr"],
            ssim=row["ssim"],
        )
        items.append(item)
        shown.append(Shown(name, item, originals[position].cpu(), recovered[j].cpu()))
    return items, shown


def _text_items(
    name: str, sample: AuditSample, evaluation: TextEvaluation, words: Sequence[str]
) -> tuple[list[ItemScore], list[Shown]]:
    from gradleak.metrics.text import rouge_scores

    rows = evaluation.per_sequence
    guesses = [" ".join(words[: max(1, len(str(r["truth"]).split()))]) for r in rows]
    base = rouge_scores(guesses, [str(r["truth"]) for r in rows])
    items, shown = [], []
    for position, (row, b) in enumerate(zip(rows, base, strict=True)):
        leakage, recognisable = text_leakage(float(row["rouge1"]), float(b["rouge1"]))
        item = ItemScore(
            name,
            sample.index,
            position,
            sample.data_indices[position],
            leakage,
            recognisable,
            None,
            rouge1=float(row["rouge1"]),
            exact=bool(row["exact"]),
        )
        items.append(item)
        shown.append(Shown(name, item, str(row["truth"]), str(row["recovered"])))
    return items, shown


def _baseline_scores(
    mean_image: torch.Tensor, originals: torch.Tensor
) -> tuple[list[float | None], list[float]]:
    """SSIM (None below the window) and MSE of the mean image against each original."""
    base = mean_image.to(originals.device).expand_as(originals).contiguous()
    errors = mse(base, originals).tolist()
    if ssim_supported(*originals.shape[-2:]):
        return ssim(base, originals).tolist(), errors
    return [None] * len(errors), errors


@dataclass(frozen=True)
class Baseline:
    """The no-information baseline, built from data the attacked items are not part of.

    Attributes:
        mean_image: images: the mean of the other images of the dataset, C×H×W in [0, 1]
            (mid grey where the dataset holds no other image).
        words: text: the other sentences' words, most frequent first.
    """

    mean_image: torch.Tensor | None = None
    words: tuple[str, ...] = ()


def baseline_for(settings: AuditSettings, samples: Sequence[AuditSample]) -> Baseline:
    """The baseline of the audited data, leaving out every attacked item."""
    attacked = {i for s in samples for i in s.data_indices}
    first = samples[0].view.knowledge
    if first.modality == "image":
        return Baseline(mean_image=_mean_image(settings, tuple(first.data_shape), attacked))
    run = settings.run
    lines = read_sentences(run.text_file or BUNDLED_SENTENCES) if not run.texts else []
    others = [line for i, line in enumerate(lines) if i not in attacked]
    return Baseline(words=tuple(_frequent_words(others)))


def _mean_image(
    settings: AuditSettings, shape: tuple[int, ...], attacked: set[int]
) -> torch.Tensor:
    """The mean of up to `_BASELINE_IMAGES` other images of the dataset, at the model's size."""
    run = settings.run
    # The user's own images are read with the model's channels, as the clients' were.
    channels = shape[0] if run.dataset in FILE_DATASETS else None
    images = open_images(run.dataset, run.data_root, run.split, run.image_size, channels=channels)
    if images.size != tuple(shape[-2:]):
        images = open_images(run.dataset, run.data_root, run.split, shape[-1], channels=channels)
    others = [i for i in range(len(images)) if i not in attacked]
    if not others:  # nothing else to learn the data's look from: knowing nothing is grey
        return torch.full(shape, 0.5)
    step = max(1, len(others) // _BASELINE_IMAGES)
    indices = others[::step][:_BASELINE_IMAGES]
    total = torch.zeros(shape)
    for first in range(0, len(indices), 256):
        pixels, _ = images.pixels(indices[first : first + 256])
        total += pixels.sum(0)
    return total / len(indices)


def _frequent_words(sentences: Sequence[str]) -> list[str]:
    """The sentences' words, most frequent first (ties in first-seen order)."""
    counts: dict[str, int] = {}
    for sentence in sentences:
        for word in sentence.lower().split():
            counts[word] = counts.get(word, 0) + 1
    return sorted(counts, key=lambda w: -counts[w])


def run_audit(settings: AuditSettings) -> AuditResult:
    """Audit one federated setup within its time budget.

    Args:
        settings: the audit's settings (checked here first).

    Returns:
        The attacks' summaries, the items' scores, the overall row, the verdict and the
        worst reconstructions. After Ctrl-C or SIGTERM during the attacks, what was
        attacked so far, with `interrupted` set.

    Raises:
        GradleakError: settings that cannot run, data or a model that cannot be used, or a
            budget too small to attack anything (before any attack runs).
    """
    settings = settings.validate()
    clock = _Clock(settings.budget)
    samples = _samples(settings, clock)
    setup = clock.elapsed()
    first = samples[0]
    target = AuditTarget(first.view.model, first.view.knowledge, first.update.kind, settings.priors)
    chosen = select_attacks(target, settings.attacks)
    baseline = baseline_for(settings, samples)
    summaries: list[AttackSummary] = []
    items: list[ItemScore] = []
    shown: list[Shown] = []
    interrupted = False
    runnable = [c for c in chosen if c.attack is not None]
    bar = tqdm(
        total=len(runnable) * len(samples),
        desc="audit",
        unit="update",
        disable=None if settings.progress else True,
        leave=False,
    )
    try:
        for k, selected in enumerate(chosen):
            if selected.attack is None:
                summaries.append(
                    AttackSummary(
                        selected.candidate.attack,
                        selected.candidate.purpose,
                        "skipped",
                        selected.reason,
                    )
                )
                continue
            bar.set_postfix_str(f"{selected.candidate.attack}, {max(0.0, clock.left()):.0f} s left")
            weights_left = sum(c.candidate.weight for c in chosen[k:] if c.attack is not None)
            summary, found, pictures, stop = _run_one(
                selected, target, samples, settings, clock, weights_left, baseline
            )
            summaries.append(summary)
            items.extend(found)
            shown.extend(pictures)
            bar.update(len(samples))
            if stop:
                interrupted = True
                break
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    done = {s.attack for s in summaries}
    for selected in chosen:
        if selected.candidate.attack not in done:
            summaries.append(
                AttackSummary(
                    selected.candidate.attack,
                    selected.candidate.purpose,
                    "skipped",
                    # One that would not have run says why; the others were cut short.
                    selected.reason
                    if selected.attack is None and selected.reason
                    else "the audit was interrupted before it ran",
                )
            )
    row = overall(summaries, items)
    budget_text = f"{settings.budget:g} s"
    result_verdict = verdict(row, summaries, settings.gates, budget_text)
    # Each private item once, under the attack that recovered most of it.
    best: dict[tuple[int, int], Shown] = {}
    for one in shown:
        key = (one.item.sample, one.item.position)
        if key not in best or one.item.leakage > best[key].item.leakage:
            best[key] = one
    worst = sorted(best.values(), key=lambda s: -s.item.leakage)[:WORST_SHOWN]
    return AuditResult(
        settings=settings,
        attacks=summaries,
        items=items,
        overall=row,
        verdict=result_verdict,
        seconds=clock.elapsed(),
        setup_seconds=setup,
        interrupted=interrupted,
        worst=worst,
        description=_describe(settings, first),
        device=str(module_device(first.view.model)),
    )


def _run_one(
    selected: Selected,
    target: AuditTarget,
    samples: Sequence[AuditSample],
    settings: AuditSettings,
    clock: _Clock,
    weights_left: float,
    baseline: Baseline,
) -> tuple[AttackSummary, list[ItemScore], list[Shown], bool]:
    """Run one selected attack on every sample; (summary, items, pictures, interrupted)."""
    attack = selected.attack
    assert attack is not None
    candidate = selected.candidate
    summary = AttackSummary(
        candidate.attack,
        candidate.purpose,
        "ran",
        options=_plain(dict(candidate.options(target))),
    )
    start = time.monotonic()
    seed = settings.run.seed
    if isinstance(attack, LabelReading):
        return _read_labels(attack, summary, samples, start), [], [], False
    try:
        optimizer = _optimizer(attack)
        if optimizer is None:
            attack = _time_limited(attack, clock.left() * CLOSED_FORM_SHARE / len(samples))
            results = _reconstruct(attack, samples, seed, lambda _: None)
        else:
            share = clock.left() * (candidate.weight / weights_left if weights_left > 0 else 1.0)
            iterations, spent, attack = _iterations_for(attack, optimizer, samples, settings, share)
            # The fewest worth a share of the budget; iterations the user fixed are theirs.
            minimum = MIN_ITERATIONS.get(optimizer, 1) if settings.iterations is None else 1
            if iterations < minimum:
                summary.status = "skipped"
                summary.reason = (
                    f"its share of the budget ({max(share, 0.0):.0f} s) fits {iterations} "
                    f"iterations, fewer than {minimum}; give a larger --budget or fewer --samples"
                )
                summary.seconds = time.monotonic() - start
                return summary, [], [], False
            # The deadline is checked at every history row: rows often enough to end on time.
            attack = attack.with_options(
                {"iterations": iterations, "log_every": _LOG_EVERY.get(optimizer, 10)}
            )
            begin, rest = time.monotonic(), share - spent
            per_sample = rest / len(samples)

            def deadline(i: int) -> Observer:
                # Adam's stack ends at the share's end; L-BFGS sample i at its own slice.
                return deadline_observer(begin + per_sample * i)

            results = _reconstruct(attack, samples, seed, deadline)
        summary.iterations = max((r.iterations for r in results), default=0)
        interrupted = any(r.interrupted for r in results)
        if any(r.stopped for r in results) and not interrupted:
            summary.status = "stopped"
            summary.reason = "the budget ended it before its planned iterations"
        items, pictures = _score_attack(candidate.attack, samples, results, baseline)
    except GradleakError as exc:
        return _failed(summary, str(exc), start), [], [], False
    except Exception as exc:  # noqa: BLE001 - the user's model or an attack broke: reported
        return _failed(summary, f"{type(exc).__name__}: {exc}", start), [], [], False
    summary.seconds = time.monotonic() - start
    summary.items = len(items)
    summary.scores = summarise(items)
    return summary, items, pictures, interrupted


def _read_labels(
    reading: LabelReading, summary: AttackSummary, samples: Sequence[AuditSample], start: float
) -> AttackSummary:
    """Read every update's labels and score them as multisets (there are no images)."""
    shares = []
    try:
        for s in samples:
            predicted = reading.read(s.update, s.view.model, s.view.knowledge)
            truth = s.case.client.batch.labels
            shares.append(score_labels(predicted.cpu(), truth.cpu(), s.view.knowledge.num_classes))
    except GradleakError as exc:
        return _failed(summary, str(exc), start)
    except Exception as exc:  # noqa: BLE001 - the user's model broke: reported
        return _failed(summary, f"{type(exc).__name__}: {exc}", start)
    summary.seconds = time.monotonic() - start
    summary.items = sum(len(s.data_indices) for s in samples)
    summary.scores = {"labels": sum(x.count_accuracy for x in shares) / len(shares)}
    return summary


def _iterations_for(
    attack: attacks.Attack,
    optimizer: str,
    samples: Sequence[AuditSample],
    settings: AuditSettings,
    share: float,
) -> tuple[int, float, attacks.Attack]:
    """The iterations an optimisation attack gets, the time spent finding them, the attack.

    With `--iterations` every optimisation attack runs that many (the budget still ends
    it); else Adam gets what its timed share fits and L-BFGS its preset, ended by its
    deadline.
    """
    if hasattr(attack.config, "lbfgs_max_hours"):  # the deadline is the bound
        attack = attack.with_options({"lbfgs_max_hours": 0})
    if settings.iterations is not None:
        return settings.iterations, 0.0, attack
    if optimizer not in _SCHEDULED:
        return attack.config.iterations, 0.0, attack
    if share <= 0:
        return 0, 0.0, attack
    iterations, spent = _plan_iterations(attack, samples, settings.run.seed, share)
    return iterations, spent, attack


def _failed(summary: AttackSummary, reason: str, start: float) -> AttackSummary:
    summary.status = "failed"
    summary.reason = reason
    summary.seconds = time.monotonic() - start
    return summary


def _plain(options: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()}


def _describe(settings: AuditSettings, first: AuditSample) -> str:
    run = settings.run
    protocol = run.protocol
    if run.local_steps or run.local_epochs:
        protocol += (
            f", {run.local_epochs} local epochs"
            if run.local_epochs
            else f", {run.local_steps} local steps"
        )
    users = f", {run.users} users averaged" if run.users > 1 else ""
    defenses = f", defenses {' + '.join(run.defenses)}" if run.defenses else ", no defense"
    return (
        f"{run.model} on {first.case.client.source.split(',')[0]}, {protocol}, batch size "
        f"{run.batch_size}{users}{defenses}"
    )
