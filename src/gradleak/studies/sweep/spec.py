"""A sweep: the product of attacks × models × defenses × protocols × images × seeds.

A spec file (YAML) names the values of each axis, the settings every cell shares (`base`,
any run-config key) and per-attack option overrides. Every key and value is checked before
anything runs; errors name the key, its line in the file and the valid choices.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gradleak import attacks
from gradleak.core.errors import GradleakError
from gradleak.core.settings import replace_checked, to_plain
from gradleak.models import available_models, build_model
from gradleak.scenario.config import DEFAULT_PROTOCOL, PROTOCOLS, RunConfig

AXES = ("attack", "model", "defense", "protocol", "image", "seed")
SPEC_KEYS = {
    "name": "a name for the study",
    "base": "run settings every cell shares (any gradleak attack config key)",
    "attacks": "list of attack presets",
    "models": "list of model names",
    "defenses": "list of defense settings: none, a spec such as prune:0.3, or a list of specs",
    "protocols": "list of protocols: a name, or a mapping of protocol settings such as "
    "{protocol: fedavg, local_steps: 5, batch_size: 4, guess_local_steps: 1}",
    "images": "list of image indices, or a range 'A-B'",
    "seeds": "list of seeds",
    "options": "per-attack option overrides: {attack: {key: value}}",
    "success_psnr": "PSNR (dB) above which a reconstruction counts as a success",
}
NO_DEFENSE = "none"


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

    def cells(self) -> list[Cell]:
        product = itertools.product(
            self.attacks, self.models, self.defenses, self.protocols, self.images, self.seeds
        )
        return [Cell(*values) for values in product]

    def run_config(self, cell: Cell, out: Path) -> RunConfig:
        """The full run configuration of one cell."""
        base = dict(self.base)
        options = {**base.pop("attack_options", {}), **self.options.get(cell.attack, {})}
        values = {
            **base,
            "attack": cell.attack,
            "model": cell.model,
            "defenses": cell.defense,
            **self.protocol_settings.get(cell.protocol, {"protocol": cell.protocol}),
            "indices": (cell.image,),
            "seed": cell.seed,
            "attack_options": options,
            "out": out,
            "progress": False,
        }
        return replace_checked(RunConfig(), values, "sweep cell").validate()

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
        }


# --- reading a spec file with line numbers ----------------------------------------------


@dataclass
class _Located:
    """A parsed YAML value with the line of each mapping key and sequence item."""

    value: Any
    line: int
    children: dict[Any, _Located] = field(default_factory=dict)


def _locate(node: yaml.Node) -> _Located:
    line = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        located = _Located({}, line)
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            child = _locate(value_node)
            child.line = key_node.start_mark.line + 1
            located.value[key] = child.value
            located.children[key] = child
        return located
    if isinstance(node, yaml.SequenceNode):
        items = [_locate(item) for item in node.value]
        return _Located([i.value for i in items], line, dict(enumerate(items)))
    return _Located(yaml.safe_load(yaml.serialize(node)), line)


def read_located(path: Path, what: str) -> _Located:
    """A YAML file holding one mapping, with the line of every key and item."""
    path = Path(path)
    if not path.is_file():
        raise GradleakError(f"{what} not found: {path}")
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise GradleakError(f"{what} {path} cannot be read: {first}") from exc
    if node is None or not isinstance(node, yaml.MappingNode):
        raise GradleakError(f"{what} {path} must hold a mapping of keys to values")
    return _locate(node)


def read_spec(path: Path) -> SweepSpec:
    """Read and check a sweep spec file; every problem is one line naming key and line."""
    return parse_spec(read_located(path, "sweep spec"), str(path))


def parse_spec(root: _Located | Mapping[str, Any], where: str = "sweep spec") -> SweepSpec:
    """Check a spec (located YAML, or a plain mapping without line numbers)."""
    if not isinstance(root, _Located):
        root = _Located(dict(root), 0, {k: _Located(v, 0) for k, v in dict(root).items()})
    at = _Where(where, root)
    for key in root.value:
        if key not in SPEC_KEYS:
            at.fail(key, f"unknown key {key!r}; valid keys: {', '.join(SPEC_KEYS)}")
    if "attacks" not in root.value:
        at.fail(None, "the spec needs 'attacks': a list of attack presets")
    base = _base(at, root.value.get("base") or {})
    attack_names = _choices(at, "attacks", list(attacks.available()))
    models = _models(at, root.value.get("models", [base.get("model", "lenet")]))
    protocols = _protocols(at, root.value.get("protocols", [DEFAULT_PROTOCOL]), base)
    spec = SweepSpec(
        name=str(root.value.get("name", Path(where).stem)),
        base=base,
        attacks=attack_names,
        models=models,
        defenses=_defenses(at, root.value.get("defenses", [NO_DEFENSE])),
        protocols=tuple(protocols),
        protocol_settings=protocols,
        images=_images(at, root.value.get("images", list(base.get("indices", [0])))),
        seeds=_ints(at, "seeds", root.value.get("seeds", [base.get("seed", 0)])),
        options=_options(at, root.value.get("options") or {}, attack_names),
        success_psnr=_number(at, "success_psnr", root.value.get("success_psnr", 20.0)),
    )
    axes = {"attacks": spec.attacks, "models": spec.models, "defenses": spec.defenses}
    axes["protocols"] = spec.protocols
    for key, values in axes.items():
        if len(set(values)) != len(values):  # defenses compare after parsing: none == []
            at.fail(key, f"{key} repeat a value: {list(values)}; give each once")
    if not spec.cells():
        at.fail(None, "the sweep has no cells: every axis needs at least one value")
    # Each cell's run config must be valid too (e.g. a batch larger than the data).
    spec.run_config(spec.cells()[0], Path("."))
    return spec


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
        try:
            # Checked together with `base`: e.g. a local batch must fit base's batch size.
            replace_checked(RunConfig(), {**base, **entry}, "protocols entry").validate()
        except GradleakError as exc:
            at.fail("protocols", str(exc), i)
        extra = " ".join(f"{k}={v}" for k, v in entry.items() if k != "protocol")
        label = f"{entry['protocol']} {extra}".strip()
        if label in settings:
            at.fail("protocols", f"protocols repeat a value: {label!r}; give each once", i)
        settings[label] = entry
    return settings


def _models(at: _Where, values: Any) -> tuple[str, ...]:
    values = _list(at, "models", values)
    for i, name in enumerate(values):
        try:
            build_model(str(name), num_classes=10)
        except GradleakError:
            at.fail(
                "models",
                f"models entry {name!r} is not a model; choose from: "
                f"{', '.join(available_models())}",
                i,
            )
    return tuple(str(v) for v in values)


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
        return tuple(range(int(match[1]), int(match[2]) + 1))
    return _ints(at, "images", value, minimum=0)


def _ints(at: _Where, key: str, value: Any, minimum: int = 0) -> tuple[int, ...]:
    values = _list(at, key, value)
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, int) or v < minimum:
            at.fail(key, f"{key} entry {v!r} must be an integer >= {minimum}", i)
    if len(set(values)) != len(values):
        at.fail(key, f"{key} repeat a value: {values}")
    return tuple(values)


def _number(at: _Where, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        at.fail(key, f"'{key}' must be a positive number, got {value!r}")
    return float(value)


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
