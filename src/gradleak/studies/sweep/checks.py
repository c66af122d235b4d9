"""Every cell of a sweep checked before any cell runs.

A cell is a setting (attack × model × defense × protocol) at one image and one seed. What
can refuse a cell is its setting — its run configuration, the plan of its run (`plan_run`:
an attack that cannot read the protocol's updates, bad options or defenses), a model that
cannot be built for the data, whose checkpoint does not fit or that the attack cannot
attack, data that cannot be opened — or its image against the size of the dataset (with
the batch and the users, the images a cell reads run from its image on). Seeds are checked
by the spec. Each setting is planned once, each dataset opened and each model built once,
so a sweep of many cells is checked in about the time of its settings.

The L-BFGS attacks also estimate their time (`scenario/budget.py`'s `check_run_budget`, once
per attack × model × protocol: the images, seeds and defenses do not change the cost of a
step); a cell beyond the attack's bound is refused like any other, and when the sweep's
L-BFGS cells together may take `NOTICE_SECONDS` or more, one notice says how long at most.

The first problem is refused in one line naming the cell, the spec lines behind it and how
many cells cannot run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from torch import nn

from gradleak.attacks.base import ModelChecked
from gradleak.attacks.engine.budget import BudgetEstimate, spell_seconds
from gradleak.attacks.engine.step import Notice, print_notice
from gradleak.core.errors import GradleakError
from gradleak.data import dataset_stats, input_shape, load_image, open_images
from gradleak.models import build_model, check_checkpoint_model, load_checkpoint
from gradleak.scenario.budget import check_run_budget
from gradleak.scenario.config import RunConfig
from gradleak.scenario.plan import RunPlan, plan_run
from gradleak.scenario.user_model import fit_user_model, is_user_model
from gradleak.studies.sweep.spec import Cell, SweepSpec

T = TypeVar("T")
# From how long the L-BFGS cells of a sweep may take together, a notice says so. Short
# sweeps stay quiet: the estimates are upper bounds timed on a machine that may be busy.
NOTICE_SECONDS = 600.0


@dataclass(frozen=True)
class Problem:
    """Why a cell cannot run, and the spec entries behind it (axes, or "base")."""

    blame: tuple[str, ...]
    message: str


def check_cells(spec: SweepSpec, where: str, *, notice: Notice = print_notice) -> None:
    """Refuse the sweep if any of its cells cannot run.

    Args:
        spec: the sweep, its keys and values already checked.
        where: what names the spec in messages (its file, or e.g. "study NAME").
        notice: where the line saying how long the L-BFGS cells may take goes (when that
            is `NOTICE_SECONDS` or more).

    Raises:
        GradleakError: naming the first cell that cannot run, the spec lines behind it
            (where the spec came from a file), the reason and how many cells cannot run.
    """
    checker = _Checker(spec)
    cells = spec.cells()
    first: tuple[Cell, Problem] | None = None
    count = 0
    for cell in cells:
        problem = checker.problem(cell)
        if problem is not None:
            count += 1
            first = first or (cell, problem)
    if first is None:
        checker.tell_budget(cells, notice)
        return
    cell, problem = first
    more = f" ({count} of {len(cells)} cells cannot run)" if count > 1 else ""
    raise GradleakError(
        f"{where}{_lines(spec, cell, problem.blame)}: cell {cell.describe()}: "
        f"{problem.message}{more}"
    )


def _lines(spec: SweepSpec, cell: Cell, blame: tuple[str, ...]) -> str:
    values = cell.axis_values()
    values["defense"], values["base"], values["options"] = cell.defense, None, cell.attack
    found = sorted({spec.lines.get(axis, {}).get(values[axis], 0) for axis in blame} - {0})
    if not found:
        return ""
    return f", line{'s' if len(found) > 1 else ''} {', '.join(map(str, found))}"


@dataclass(frozen=True)
class _Setting:
    """A setting that plans: the images each of its cells reads, and the data's size."""

    total: int  # images a cell reads, from its own image on (users × batch_size)
    size: int | None  # images in the data (None: one image file, attacked by every cell)
    dataset: str  # how messages name the data

    def problem(self, image: int) -> Problem | None:
        if self.size is None or image + self.total <= self.size:
            return None
        reads = (
            f"images {image}..{image + self.total - 1} lie"
            if self.total > 1
            else (f"image {image} lies")
        )
        return Problem(
            ("image",),
            f"{reads} past the end of {self.dataset}, which has {self.size} images "
            f"(0..{self.size - 1}); start images at {self.size - self.total} or less",
        )


class _Checker:
    """Each setting planned once, each dataset opened and each model built once; then a
    cell is a look-up."""

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.settings: dict[tuple[Any, ...], _Setting | Problem] = {}
        self.data: dict[tuple[Any, ...], _Data | Problem] = {}
        self.models: dict[tuple[Any, ...], nn.Module | Problem] = {}
        self.sizes: dict[tuple[Any, ...], int | None | Problem] = {}
        self.budgets: dict[tuple[Any, ...], BudgetEstimate | Problem | None] = {}

    def tell_budget(self, cells: list[Cell], notice: Notice) -> None:
        """One notice of the longest the L-BFGS cells may take, from `NOTICE_SECONDS` on."""
        estimates = [self.budgets.get(_budget_key(cell)) for cell in cells]
        seconds = [e.seconds for e in estimates if isinstance(e, BudgetEstimate)]
        if sum(seconds) >= NOTICE_SECONDS:
            each = spell_seconds(max(seconds)) if max(seconds) >= 1 else "under 1 s"
            notice(
                f"the sweep's {len(seconds)} L-BFGS cell(s) may take up to "
                f"{spell_seconds(sum(seconds))} one after another (at most {each} each; "
                "trials that converge stop sooner)"
            )

    def problem(self, cell: Cell) -> Problem | None:
        key = (cell.attack, cell.model, cell.defense, cell.protocol)
        if key not in self.settings:
            self.settings[key] = self._setting(cell)
        setting = self.settings[key]
        return setting if isinstance(setting, Problem) else setting.problem(cell.image)

    def _setting(self, cell: Cell) -> _Setting | Problem:
        try:
            config = self.spec.run_config(cell, Path("."))
        except GradleakError as exc:
            return Problem(("attack", "protocol", "base"), str(exc))
        try:
            plan = plan_run(config)
        except GradleakError as exc:
            return Problem(("attack", "protocol"), str(exc))
        if is_user_model(plan.model):
            # A factory is built first and the data read at the size it takes, as a run does.
            side = _cached(self.sizes, _size_key(plan), lambda: _user_model_size(plan))
            if isinstance(side, Problem):
                return side
            config = replace(config, image_size=side)
        data = _cached(self.data, _data_key(config), lambda: _open_data(config))
        if isinstance(data, Problem):
            return data
        model = _cached(
            self.models,
            (config.model, repr(config.model_args), config.checkpoint, data.shape, data.classes),
            lambda: _build_model(config, data),
        )
        if isinstance(model, Problem):
            return model
        if isinstance(plan.attack, ModelChecked):  # the attack's own refusals of the model
            try:
                plan.attack.check_model(model, data.shape, config.batch_size)
            except GradleakError as exc:
                return Problem(("attack", "model"), str(exc))
        if data.size is not None and config.total_samples > data.size:
            return Problem(("protocol", "base"), _too_many(config, data))
        budget = _cached(self.budgets, _budget_key(cell), lambda: _budget(config))
        if isinstance(budget, Problem):
            return budget
        return _Setting(config.total_samples, data.size, data.name)


def _budget_key(cell: Cell) -> tuple[Any, ...]:
    # What the cost of an attack's step depends on; images, seeds and defenses do not.
    return (cell.attack, cell.model, cell.protocol)


def _budget(config: RunConfig) -> BudgetEstimate | Problem | None:
    """The attack's time estimate for one cell, or why it is refused."""
    told: list[str] = []  # one run's notice: the sweep tells its total instead
    try:
        return check_run_budget(config, notice=told.append)
    except GradleakError as exc:
        return Problem(("attack", "options"), str(exc))


@dataclass(frozen=True)
class _Data:
    """What the cells' data is: one image's shape, the classes, the size and a name."""

    shape: tuple[int, ...]  # images (C, H, W); text (padded length, hidden size)
    classes: int
    size: int | None  # None: one image file, or sentences given in `texts`
    name: str
    # Text: the model the sentences were encoded for (built once, with the case).
    model: nn.Module | None = None


def _cached(
    cache: dict[tuple[Any, ...], Any], key: tuple[Any, ...], make: Callable[[], Any]
) -> Any:
    if key not in cache:
        cache[key] = make()
    return cache[key]


def _size_key(plan: RunPlan) -> tuple[Any, ...]:
    # What a factory's fit to the data depends on (not the images, seeds or defenses).
    data, model = plan.data, plan.model
    fixed = (data.dataset, data.image_size, data.image, data.label, data.num_classes)
    return (model.name, repr(model.model_args), *fixed)


def _user_model_size(plan: RunPlan) -> int | None | Problem:
    """The side a factory's model reads the data at (`scenario/user_model.py`)."""
    try:
        fitted = fit_user_model(plan.data, replace(plan.model, seed=0, checkpoint=None))
    except GradleakError as exc:
        return Problem(("model", "base"), str(exc))
    return fitted.data.image_size


def _data_key(config: RunConfig) -> tuple[Any, ...]:
    if config.modality == "text":
        # A batch of sentences is encoded for its model: the model is part of the data.
        return ("text", config.texts, config.text_file, config.task, config.model)
    return (config.dataset, config.data_root, config.split, config.image_size, config.image)


def _open_data(config: RunConfig) -> _Data | Problem:
    """The data a run reads: the dataset opened (its length), or its one image read; for
    text the sentences (their count) and one encoded batch (its shape)."""
    if config.modality == "text":
        return _open_sentences(config)
    try:
        channels, (height, width) = input_shape(config.dataset, config.image_size)
        shape = (channels, height, width)
        if config.image is not None:
            load_image(config.image, (height, width), channels)
            classes = config.num_classes or dataset_stats(config.dataset).num_classes
            return _Data(shape, classes, None, str(config.image))
        images = open_images(config.dataset, config.data_root, config.split, config.image_size)
    except GradleakError as exc:
        return Problem(("base",), str(exc))
    classes = config.num_classes or images.num_classes
    return _Data(shape, classes, len(images), images.description)


def _open_sentences(config: RunConfig) -> _Data | Problem:
    """Text: the setting's first batch built as a run builds it (sentences, tokenizer,
    model), and how many sentences the file holds (None: sentences given in `texts`)."""
    from gradleak.data.text import BUNDLED_SENTENCES, read_sentences
    from gradleak.scenario.case import build_case

    path = config.text_file or BUNDLED_SENTENCES
    try:
        server = build_case(config).server
        size = None if config.texts else len(read_sentences(path))
    except GradleakError as exc:
        return Problem(("model", "base"), str(exc))
    name = "the given sentences" if config.texts else str(path)
    facts = server.knowledge
    return _Data(facts.data_shape, facts.num_classes, size, name, server.model)


def _build_model(config: RunConfig, data: _Data) -> nn.Module | Problem:
    """The model the cells attack, built for the data (with its checkpoint loaded)."""
    if data.model is not None:  # text: built with the sentences (`_open_sentences`)
        return data.model
    channels, height, width = data.shape
    try:
        model = build_model(
            config.model,
            num_classes=data.classes,
            in_channels=channels,
            image_size=(height, width),
            seed=0,
            model_args=config.model_args,
        )
    except GradleakError as exc:
        return Problem(("model",), str(exc))
    if config.checkpoint is not None:
        try:
            check_checkpoint_model(config.checkpoint, config.model, config.model_args)
            load_checkpoint(model, config.checkpoint)
        except GradleakError as exc:
            return Problem(("model", "base"), str(exc))
    return model


def _too_many(config: RunConfig, data: _Data) -> str:
    if config.users > 1:
        return (
            f"{config.users} users × batch_size {config.batch_size} need "
            f"{config.total_samples} images but {data.name} has {data.size}; lower users or "
            "batch_size"
        )
    return (
        f"batch_size {config.batch_size} needs {config.total_samples} images but "
        f"{data.name} has {data.size}; use batch_size {data.size} or less"
    )
