"""A sweep: the product of attacks × models × defenses × protocols × images × seeds.

A spec file (YAML) names the values of each axis, the settings every cell shares (`base`,
any run-config key) and per-attack option overrides. Every key and value is checked before
anything runs, and then every cell (`studies/sweep/checks.py`); errors name the key, its
line in the file and the valid choices.

A spec holds plain data only: mappings, lists, strings, numbers, booleans and null. The
file is composed to YAML nodes, never loaded as a whole, and a node carrying any other tag
(`!!python/...`, `!!binary`, a custom `!tag`) is refused with its line; no Python object is
ever built from a spec.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

import yaml

from gradleak import attacks
from gradleak.attacks.engine.step import Notice, print_notice
from gradleak.core.errors import GradleakError
from gradleak.core.settings import replace_checked, to_plain
from gradleak.models import available_models, is_model_name
from gradleak.models.text import TEXT_MODELS, is_text_model
from gradleak.models.user import check_model_args
from gradleak.scenario.config import DEFAULT_PROTOCOL, MODALITY_DEFAULTS, PROTOCOLS, RunConfig

AXES = ("attack", "model", "defense", "protocol", "image", "seed")
SPEC_KEYS = {
    "name": "a name for the study",
    "base": "run settings every cell shares (any gradleak attack config key)",
    "attacks": "list of attack presets",
    "models": "list of models: a name, your own MODULE:FACTORY or FILE.py:FACTORY, or a "
    "mapping {model: FILE.py:FACTORY, model_args: {width: 16}} (the factory's arguments)",
    "defenses": "list of defense settings: none, a spec such as prune:0.3, or a list of specs",
    "protocols": "list of protocols: a name, or a mapping of protocol settings such as "
    "{protocol: fedavg, local_steps: 5, batch_size: 4, guess_local_steps: 1}",
    "images": "list of image indices (text: sentence indices), or a range 'A-B'",
    "seeds": "list of seeds",
    "options": "per-attack option overrides: {attack: {key: value}}",
    "success_psnr": "PSNR (dB) above which an image reconstruction counts as a success "
    "(text cells succeed when every sequence is recovered exactly)",
}
NO_DEFENSE = "none"
# More cells than this is a mistake (e.g. a range of a million images), refused before the
# cells are listed.
MAX_CELLS = 1_000_000
MAX_SEED = 2**63 - 1


@dataclass(frozen=True)
class Cell:
    """One run of a sweep: a value on every axis."""

    attack: str
    model: str
    defense: tuple[str, ...]
    protocol: str
    image: int
    seed: int

    @property
    def defense_label(self) -> str:
        return "+".join(self.defense) if self.defense else NO_DEFENSE

    @property
    def name(self) -> str:
        """A file-system-safe, unique name for the cell's run directory."""
        parts = [self.attack, self.model, self.defense_label, self.protocol]
        parts += [f"img{self.image}", f"s{self.seed}"]
        return "__".join(re.sub(r"[^A-Za-z0-9.+-]", "-", p) for p in parts)

    def describe(self) -> str:
        """The cell's settings for messages, e.g. "attack dlg, model lenet, …, seed 0"."""
        return ", ".join(f"{axis} {value}" for axis, value in self.axis_values().items())

    def axis_values(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "model": self.model,
            "defense": self.defense_label,
            "protocol": self.protocol,
            "image": self.image,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class SweepSpec:
    name: str
    base: dict[str, Any]
    attacks: tuple[str, ...]
    models: tuple[str, ...]
    defenses: tuple[tuple[str, ...], ...]
    protocols: tuple[str, ...]
    images: tuple[int, ...]
    seeds: tuple[int, ...]
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    success_psnr: float = 20.0
    # The run settings behind each protocol label (a plain name sets only `protocol`).
    protocol_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # The run settings behind each model label (`model`, `model_args`; a plain name sets
    # only `model`).
    model_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Where each value was given: axis (attack, model, …, seed) → value → line of the spec
    # file, "options" → attack → line and "base" → setting → line; empty for a spec given
    # as a plain mapping.
    lines: dict[str, dict[Any, int]] = field(default_factory=dict, compare=False, repr=False)

    def cells(self) -> list[Cell]:
        product = itertools.product(
            self.attacks, self.models, self.defenses, self.protocols, self.images, self.seeds
        )
        return [Cell(*values) for values in product]

    def run_config(self, cell: Cell, out: Path) -> RunConfig:
        """The full run configuration of one cell."""
        base = dict(self.base)
        options = {**base.pop("attack_options", {}), **self.options.get(cell.attack, {})}
        model = dict(self.model_settings.get(cell.model, {"model": cell.model}))
        if "model_args" in model:  # an entry's arguments win over base's, key by key
            model["model_args"] = {**base.get("model_args", {}), **model["model_args"]}
        values = {
            **base,
            "attack": cell.attack,
            **model,
            "defenses": cell.defense,
            **self.protocol_settings.get(cell.protocol, {"protocol": cell.protocol}),
            "indices": (cell.image,),
            "seed": cell.seed,
            "attack_options": options,
            "out": out,
            "progress": False,
        }
        return replace_checked(RunConfig(), values, "sweep cell").validate()

    def modality(self, cell: Cell) -> str:
        """The kind of data a cell attacks (image, text): set by `base` or by the cell's
        protocol entry, as `run_config` would."""
        return self._modality(cell.protocol)

    def modalities(self) -> list[str]:
        """The kinds of data the sweep's cells attack, each once, in protocol order."""
        return list(dict.fromkeys(self._modality(protocol) for protocol in self.protocols))

    def _modality(self, protocol: str) -> str:
        settings = {**self.base, **self.protocol_settings.get(protocol, {})}
        return str(settings.get("modality", RunConfig.modality))

    def axes(self) -> dict[str, list[Any]]:
        return {
            "attack": list(self.attacks),
            "model": list(self.models),
            "defense": ["+".join(d) if d else NO_DEFENSE for d in self.defenses],
            "protocol": list(self.protocols),
            "image": list(self.images),
            "seed": list(self.seeds),
        }

    def to_dict(self) -> dict[str, Any]:
        """The resolved spec, as written next to the results."""
        return {
            "name": self.name,
            "base": to_plain(self.base),
            "axes": self.axes(),
            "options": self.options,
            "success_psnr": self.success_psnr,
            "protocol_settings": to_plain(self.protocol_settings),
            **({"model_settings": to_plain(self.model_settings)} if self.model_settings else {}),
        }


# --- reading a spec file with line numbers ----------------------------------------------


@dataclass
class _Located:
    """A parsed YAML value with the line of each mapping key and sequence item."""

    value: Any
    line: int
    children: dict[Any, _Located] = field(default_factory=dict)


_CORE = "tag:yaml.org,2002:"
# The tags of plain data: YAML's core schema, and the timestamps and merge (`<<`) and value
# (`=`) keys that its plain scalars may resolve to. Any other tag would ask for an object to
# be built, so it is refused.
_PLAIN_TAGS = frozenset(
    _CORE + name
    for name in ("map", "seq", "str", "int", "float", "bool", "null", "timestamp", "merge", "value")
)
# Tags whose scalar stands for itself (PyYAML has no constructor for them outside a mapping).
_LITERAL_TAGS = frozenset({_CORE + "merge", _CORE + "value"})
# Bounds on what a spec file may unfold to: nesting, and values (aliases repeat a node).
_MAX_DEPTH = 64
_MAX_NODES = 100_000


class _Locator:
    """Turns composed YAML nodes into located plain values, refusing what is not plain data.

    Errors name the file and the line: a tag outside `_PLAIN_TAGS`, a key that is a mapping
    or a list, a key given twice, an alias that contains itself, a value that cannot be read
    (e.g. the date 2020-13-45), or a file that unfolds to more than `_MAX_NODES` values.
    """

    def __init__(self, where: str) -> None:
        self.where = where
        self.nodes = 0
        self.open: set[int] = set()  # the nodes being located: an alias back to one recurses
        self.constructor = yaml.constructor.SafeConstructor()

    def fail(self, node: yaml.Node, message: str) -> NoReturn:
        raise GradleakError(f"{self.where}, line {node.start_mark.line + 1}: {message}")

    def locate(self, node: yaml.Node, depth: int = 0) -> _Located:
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            self.fail(node, f"the file unfolds to more than {_MAX_NODES} values; write it out")
        if depth > _MAX_DEPTH:
            self.fail(node, f"values are nested more than {_MAX_DEPTH} levels deep")
        self.check_tag(node)
        if id(node) in self.open:
            self.fail(node, "an alias refers to a value that contains it; write the value out")
        self.open.add(id(node))
        try:
            return self._located(node, depth)
        finally:
            self.open.discard(id(node))

    def check_tag(self, node: yaml.Node) -> None:
        if node.tag not in _PLAIN_TAGS:
            tag = node.tag.replace(_CORE, "!!", 1)
            self.fail(
                node,
                f"the tag {tag} is not allowed: a spec holds plain mappings, lists, strings, "
                "numbers, booleans and null; drop the tag",
            )

    def _located(self, node: yaml.Node, depth: int) -> _Located:
        line = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            located = _Located({}, line)
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    self.check_tag(key_node)
                    self.fail(key_node, "a key must be a plain value, not a mapping or a list")
                key = self.locate(key_node, depth + 1).value
                if key in located.children:
                    self.fail(key_node, f"the key {key!r} is given twice; keep one")
                child = self.locate(value_node, depth + 1)
                child.line = key_node.start_mark.line + 1
                located.value[key] = child.value
                located.children[key] = child
            return located
        if isinstance(node, yaml.SequenceNode):
            items = [self.locate(item, depth + 1) for item in node.value]
            return _Located([i.value for i in items], line, dict(enumerate(items)))
        if node.tag in _LITERAL_TAGS:
            return _Located(node.value, line)
        try:
            return _Located(self.constructor.construct_object(node), line)
        except (yaml.YAMLError, ValueError, OverflowError) as exc:  # e.g. month 13, huge int
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self.fail(node, f"cannot read the value {node.value!r}: {first}")


def read_located(path: Path, what: str) -> _Located:
    """A YAML file holding one mapping of plain data, with the line of every key and item.

    Args:
        path: the file.
        what: what the file is, for the messages (e.g. "sweep spec").

    Returns:
        The mapping, with the line of each key and list item.

    Raises:
        GradleakError: the file is missing, unreadable or not YAML, does not hold a
            mapping, or holds anything but plain data (see `_Locator`); one line naming
            the file and, where there is one, the line.
    """
    path = Path(path)
    if path.is_dir():
        raise GradleakError(f"{what} {path} is a folder, not a file; give the YAML file")
    if not path.is_file():
        raise GradleakError(f"{what} not found: {path}")
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GradleakError(f"{what} {path} cannot be read: {first}") from exc
    except RecursionError:  # PyYAML composes nested collections recursively
        raise GradleakError(f"{what} {path} nests values too deeply to be read") from None
    if node is None or not isinstance(node, yaml.MappingNode):
        raise GradleakError(f"{what} {path} must hold a mapping of keys to values")
    return _Locator(f"{what} {path}").locate(node)


def read_spec(path: Path, *, notice: Notice = print_notice) -> SweepSpec:
    """Read and check a sweep spec file; every problem is one line naming key and line."""
    return parse_spec(read_located(path, "sweep spec"), str(path), notice=notice)


def parse_spec(
    root: _Located | Mapping[str, Any], where: str = "sweep spec", *, notice: Notice = print_notice
) -> SweepSpec:
    """Check a spec and every cell it lists; the first problem is one line.

    Args:
        root: the spec: located YAML (`read_located`), or a plain mapping (then messages
            have no line numbers).
        where: what names the spec in messages (its file, or e.g. "study NAME").
        notice: where the line saying how long the L-BFGS cells may take goes.

    Returns:
        The checked sweep.

    Raises:
        GradleakError: a key, a value or a cell that cannot run, naming the key or the
            cell and the spec's line (see `studies/sweep/checks.py` for the cells).
    """
    from gradleak.studies.sweep.checks import check_cells  # the checks build on SweepSpec

    if not isinstance(root, _Located):
        root = _Located(dict(root), 0, {k: _Located(v, 0) for k, v in dict(root).items()})
    at = _Where(where, root)
    for key in root.value:
        if key not in SPEC_KEYS:
            at.fail(key, f"unknown key {key!r}; valid keys: {', '.join(SPEC_KEYS)}")
    if "attacks" not in root.value:
        at.fail(None, "the spec needs 'attacks': a list of attack presets")
    base = _base(at, _given(root, "base", {}))
    attack_names = _choices(at, "attacks", list(attacks.available()))
    model_settings = _models(at, root.value.get("models", ["lenet"]))
    models = tuple(model_settings)
    protocols = _protocols(at, root.value.get("protocols", [DEFAULT_PROTOCOL]), base)
    defenses = _defenses(at, root.value.get("defenses", [NO_DEFENSE]))
    images = _images(at, root.value.get("images", [0]))
    seeds = _ints(at, "seeds", root.value.get("seeds", [0]), maximum=MAX_SEED)
    count = math.prod(map(len, (attack_names, models, defenses, protocols, images, seeds)))
    if count > MAX_CELLS:
        at.fail(None, f"the sweep has {count} cells, more than {MAX_CELLS}; split it up")
    spec = SweepSpec(
        name=_name(at, root.value.get("name", Path(where).stem)),
        base=base,
        attacks=attack_names,
        models=models,
        defenses=defenses,
        protocols=tuple(protocols),
        protocol_settings=protocols,
        model_settings={k: v for k, v in model_settings.items() if v != {"model": k}},
        images=images,
        seeds=seeds,
        options=_options(at, _given(root, "options", {}), attack_names),
        success_psnr=_number(at, "success_psnr", root.value.get("success_psnr", 20.0)),
    )
    axes = {"attacks": spec.attacks, "models": spec.models, "defenses": spec.defenses}
    axes["protocols"] = spec.protocols
    for key, values in axes.items():
        if len(set(values)) != len(values):  # defenses compare after parsing: none == []
            at.fail(key, f"{key} repeat a value: {list(values)}; give each once")
    spec = replace(spec, lines=_lines(root, spec))
    check_cells(spec, where, notice=notice)
    return spec


def _given(root: _Located, key: str, default: Any) -> Any:
    """The value of `key`, or `default` when it is absent or empty (`key:` alone is null)."""
    value = root.value.get(key)
    return default if value is None else value


def _lines(root: _Located, spec: SweepSpec) -> dict[str, dict[Any, int]]:
    """Axis → value → the line it was given on; "options" → attack → line; "base" → setting →
    line (None: `base` itself)."""
    given = {
        "attack": ("attacks", spec.attacks),
        "model": ("models", spec.models),
        "defense": ("defenses", spec.defenses),
        "protocol": ("protocols", tuple(spec.protocol_settings)),
        "image": ("images", spec.images),
        "seed": ("seeds", spec.seeds),
    }
    lines: dict[str, dict[Any, int]] = {}
    for axis, (key, values) in given.items():
        child = root.children.get(key)
        if child is not None and child.line:
            # A range of images ('0-9') is one line; a list has one line per entry.
            lines[axis] = {
                value: child.children[i].line if i in child.children else child.line
                for i, value in enumerate(values)
            }
    options = root.children.get("options")
    if options is not None and options.line:
        lines["options"] = {name: child.line for name, child in options.children.items()}
    base = root.children.get("base")
    if base is not None and base.line:
        lines["base"] = {None: base.line, **{k: c.line for k, c in base.children.items()}}
    return lines


class _Where:
    def __init__(self, where: str, root: _Located) -> None:
        self.where, self.root = where, root

    def line(self, key: Any, index: int | None = None) -> str:
        child = self.root.children.get(key)
        if child is None or not child.line:
            return ""
        if index is not None and index in child.children:
            return f", line {child.children[index].line}"
        return f", line {child.line}"

    def fail(self, key: Any, message: str, index: int | None = None) -> None:
        raise GradleakError(f"{self.where}{self.line(key, index)}: {message}")


def _list(at: _Where, key: str, value: Any) -> list[Any]:
    if not isinstance(value, list):
        at.fail(key, f"'{key}' must be a list, got {value!r}")
    if not value:
        at.fail(key, f"'{key}' is empty; give at least one value")
    return value


def _choices(
    at: _Where, key: str, allowed: list[str], default: list[Any] | None = None
) -> tuple[str, ...]:
    values = at.root.value.get(key)
    if values is None:
        values = [v for v in (default or []) if v is not None] or [allowed[0]]
    values = _list(at, key, values)
    for i, value in enumerate(values):
        if value not in allowed:
            at.fail(key, f"{key} entry {value!r} is not one of: {', '.join(allowed)}", i)
    return tuple(values)


# Keys a protocol entry may not set: the other axes decide them.
_NOT_PROTOCOL_KEYS = ("attack", "model", "defenses", "indices", "seed", "out", "attack_options")


def _protocols(at: _Where, values: Any, base: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Label → run settings; a label is the name, or 'name key=value …' for a mapping."""
    values = _list(at, "protocols", values)
    settings: dict[str, dict[str, Any]] = {}
    for i, value in enumerate(values):
        if isinstance(value, str):
            entry = {"protocol": value}
        elif isinstance(value, dict):
            entry = {"protocol": DEFAULT_PROTOCOL, **value}
        else:
            at.fail("protocols", f"protocols entry {value!r} must be a name or a mapping", i)
        bad = [k for k in entry if k in _NOT_PROTOCOL_KEYS]
        if bad:
            at.fail("protocols", f"protocols entry sets {bad[0]!r}, which another axis decides", i)
        if entry["protocol"] not in PROTOCOLS:
            at.fail(
                "protocols",
                f"protocols entry {entry['protocol']!r} is not one of: {', '.join(PROTOCOLS)}",
                i,
            )
        run = {**base, **entry}
        run.pop("model_args", None)  # a factory's arguments go with the model axis's cells
        # The model and attack the axes will give are the cells' check; here a run of the
        # entry's modality (text needs a text model) takes that modality's defaults.
        run = {**MODALITY_DEFAULTS.get(str(run.get("modality", RunConfig.modality)), {}), **run}
        try:
            # Checked together with `base`: e.g. a local batch must fit base's batch size.
            replace_checked(RunConfig(), run, "protocols entry").validate()
        except GradleakError as exc:
            at.fail("protocols", str(exc), i)
        extra = " ".join(f"{k}={v}" for k, v in entry.items() if k != "protocol")
        label = f"{entry['protocol']} {extra}".strip()
        if label in settings:
            at.fail("protocols", f"protocols repeat a value: {label!r}; give each once", i)
        settings[label] = entry
    return settings


_MODEL_ENTRY_KEYS = ("model", "model_args")


def _models(at: _Where, values: Any) -> dict[str, dict[str, Any]]:
    """Label → run settings; a label is the name, or 'name key=value …' for a mapping."""
    values = _list(at, "models", values)
    settings: dict[str, dict[str, Any]] = {}
    for i, value in enumerate(values):
        entry = value if isinstance(value, dict) else {"model": value}
        bad = [k for k in entry if k not in _MODEL_ENTRY_KEYS]
        if bad:
            at.fail(
                "models",
                f"models entry sets {bad[0]!r}; a mapping holds {' and '.join(_MODEL_ENTRY_KEYS)}",
                i,
            )
        name = entry.get("model")
        # Only the name here: whether the model builds and takes the data's images is a
        # cell's check (a factory is imported then, not now).
        if not (is_model_name(name) or is_text_model(name)):
            at.fail(
                "models",
                f"models entry {name!r} is not a model; choose from: "
                f"{', '.join([*available_models(), *TEXT_MODELS])}, or give your own as "
                "MODULE:FACTORY or FILE.py:FACTORY",
                i,
            )
        args = entry.get("model_args") or {}
        if not isinstance(args, dict):
            at.fail("models", f"models entry's model_args must be a mapping, got {args!r}", i)
        try:
            check_model_args(str(name), args)
        except GradleakError as exc:
            at.fail("models", str(exc), i)
        label = " ".join([str(name), *(f"{k}={v}" for k, v in args.items())])
        if label in settings:
            at.fail("models", f"models repeat a value: {label!r}; give each once", i)
        settings[label] = {"model": str(name), **({"model_args": dict(args)} if args else {})}
    return settings


def _defenses(at: _Where, values: Any) -> tuple[tuple[str, ...], ...]:
    from gradleak.defenses import parse_defenses  # the defenses check their own arguments

    values = _list(at, "defenses", values)
    settings = []
    for i, value in enumerate(values):
        specs = value if isinstance(value, list) else [value]
        specs = [str(s) for s in specs if str(s) != NO_DEFENSE]
        try:
            parse_defenses(specs)
        except GradleakError as exc:
            at.fail("defenses", f"defenses entry {value!r}: {exc}", i)
        settings.append(tuple(specs))
    return tuple(settings)


def _images(at: _Where, value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", value)
        if not match or int(match[1]) > int(match[2]):
            at.fail("images", f"images range {value!r} must look like '0-9' (first <= last)")
        first, last = int(match[1]), int(match[2])
        if last - first + 1 > MAX_CELLS:
            at.fail("images", f"images range {value!r} lists more than {MAX_CELLS} images")
        return tuple(range(first, last + 1))
    return _ints(at, "images", value, minimum=0)


def _ints(
    at: _Where, key: str, value: Any, minimum: int = 0, maximum: int | None = None
) -> tuple[int, ...]:
    values = _list(at, key, value)
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            at.fail(key, f"{key} entry {v!r} must be an integer >= {minimum}", i)
        if maximum is not None and v > maximum:
            at.fail(key, f"{key} entry {v} must be at most {maximum}", i)
    if len(set(values)) != len(values):
        at.fail(key, f"{key} repeat a value: {values}")
    return tuple(values)


def _number(at: _Where, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        at.fail(key, f"'{key}' must be a positive number, got {value!r}")
    if not 0 < value < math.inf:  # NaN fails this too
        at.fail(key, f"'{key}' must be a positive number, got {value!r}")
    return float(value)


def _name(at: _Where, value: Any) -> str:
    """The study's name: also the default folder (sweeps/NAME), so one plain folder name."""
    name = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if not name.strip() or name in (".", "..") or re.search(r"[/\\\x00]", name):
        at.fail("name", f"'name' must be a plain folder name (no / or \\), got {value!r}")
    return name


def _base(at: _Where, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        at.fail("base", f"'base' must be a mapping of run settings, got {value!r}")
    axis_keys = {"attack", "model", "defenses", "protocol", "indices", "seed", "out"}
    for key in value:
        if key in axis_keys:
            at.fail("base", f"'base' sets {key!r}, which the sweep's axes decide; drop it")
    try:
        replace_checked(RunConfig(), value, "'base'")
    except GradleakError as exc:
        at.fail("base", str(exc))
    return dict(value)


def _options(at: _Where, value: Any, attack_names: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    if not isinstance(value, dict):
        at.fail("options", "'options' must map attack names to option mappings")
    for name, options in value.items():
        if name not in attack_names:
            at.fail(
                "options", f"options for {name!r}, which is not in attacks {list(attack_names)}"
            )
        if not isinstance(options, dict):
            at.fail("options", f"options for {name!r} must be a mapping, got {options!r}")
        try:
            attacks.get(name).with_options(options)
        except GradleakError as exc:
            at.fail("options", str(exc))
    return {k: dict(v) for k, v in value.items()}
