"""Named studies that reproduce published settings, each a sweep spec at a chosen budget.

`gradleak bench NAME` runs one; every table in docs/RESULTS.md names the study behind it.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from gradleak.core.errors import GradleakError
from gradleak.studies.sweep.spec import SweepSpec, parse_spec

Spec = dict[str, Any]


def _dlg_lenet_cifar100(line_search: str) -> Callable[[], Spec]:
    def spec() -> Spec:
        return {
            "attacks": ["dlg"],
            "models": ["lenet"],
            "base": {"dataset": "cifar100"},
            "images": "0-99",
            "options": {"dlg": {"line_search": line_search}},
            "success_psnr": 35.0,
        }

    return spec


def _idlg_labels(model: str, dataset: str) -> Callable[[], Spec]:
    # The label comes from the update alone; a few matching steps keep the study fast.
    def spec() -> Spec:
        return {
            "attacks": ["idlg"],
            "models": [model],
            "base": {"dataset": dataset},
            "images": "0-99",
            "options": {"idlg": {"iterations": 5}},
        }

    return spec


def _ig_resnet20_4() -> Spec:
    return {
        "attacks": ["ig"],
        "models": ["resnet20-4"],
        "base": {"dataset": "cifar10", "labels_known": True, "model_mode": "eval"},
        "images": "0-9",
        "options": {"ig": {"iterations": 500, "restarts": 1}},
        "success_psnr": 20.0,
    }


def _defenses_dlg_idlg() -> Spec:
    # The same study as benchmarks/sweeps/dlg-idlg-defenses.yaml.
    return {
        "attacks": ["dlg", "idlg"],
        "models": ["lenet"],
        "base": {"dataset": "cifar10"},
        "defenses": ["none", "noise:gaussian:1e-3", "prune:0.3"],
        "images": "0-9",
        "options": {"dlg": {"iterations": 100}, "idlg": {"iterations": 100}},
        "success_psnr": 20.0,
    }


BENCHES: dict[str, tuple[Callable[[], Spec], str]] = {
    "dlg-lenet-cifar100": (
        _dlg_lenet_cifar100("strong_wolfe"),
        "DLG on LeNet, CIFAR-100 test images 0-99 (Zhu et al. 2019; gradleak's line search)",
    ),
    "dlg-lenet-cifar100-fixed-step": (
        _dlg_lenet_cifar100("none"),
        "the same with DLG's original fixed L-BFGS step",
    ),
    "idlg-labels-cifar100": (
        _idlg_labels("lenet", "cifar100"),
        "iDLG's analytic label on LeNet, CIFAR-100 test images 0-99 (label accuracy)",
    ),
    "idlg-labels-resnet20-cifar10": (
        _idlg_labels("resnet20", "cifar10"),
        "iDLG's analytic label on ResNet20, CIFAR-10 test images 0-99 (label accuracy)",
    ),
    "defenses-dlg-idlg-cifar10": (
        _defenses_dlg_idlg,
        "DLG and iDLG on LeNet against noise 1e-3 and 30% pruning, CIFAR-10 test images 0-9",
    ),
    "ig-resnet20-4-cifar10": (
        _ig_resnet20_4,
        "Inverting Gradients on untrained ResNet20-4, CIFAR-10 test images 0-9, 500 its",
    ),
}


def load_bench(
    name: str,
    *,
    count: int | None = None,
    iterations: int | None = None,
    data_root: Path | None = None,
) -> SweepSpec:
    """The named study, with the number of images and the iteration budget overridden."""
    try:
        make, _ = BENCHES[name]
    except KeyError:
        raise GradleakError(
            f"unknown study {name!r}; choose one of: {', '.join(BENCHES)} (gradleak bench list)"
        ) from None
    spec = make()
    spec["name"] = name
    if count is not None:
        if count < 1:
            raise GradleakError(f"--count must be at least 1, got {count}")
        first = int(str(spec["images"]).split("-")[0])
        spec["images"] = f"{first}-{first + count - 1}"
    if iterations is not None:
        if iterations < 1:
            raise GradleakError(f"--iterations must be at least 1, got {iterations}")
        for attack in spec["attacks"]:
            spec.setdefault("options", {}).setdefault(attack, {})["iterations"] = iterations
    if data_root is None:
        raise GradleakError(
            f"study {name!r} needs the dataset files: pass --data-root DIR (the folder "
            "holding cifar-10-batches-py/ or cifar-100-python/)"
        )
    spec["base"]["data_root"] = str(data_root)
    return parse_spec(spec, f"study {name}")
