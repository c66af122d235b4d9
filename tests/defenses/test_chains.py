"""Chains of defenses never lose a member: every accepted chain is changed by each of them."""

from __future__ import annotations

import itertools
import random
from pathlib import Path

import pytest
import torch
from torch import nn

from gradleak.cli import main
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.defenses import ClientView, Defense, apply_defenses, parse_defense, parse_defenses
from gradleak.fl.fedsgd import FedSGDClient
from gradleak.studies.sweep.spec import parse_spec
from gradleak.training.utility import UtilityConfig

pytest.importorskip("opacus")  # DP-SGD is among the members

# One spelling per kind of member, each of a strength that changes an update on its own.
MEMBERS = [
    "noise:gaussian:1e-2",
    "noise:laplacian:1e-2",
    "prune:0.5",
    "prune:0.3:global",
    "topk:0.4",
    "precision:int8",
    "precision:float16",
    "precision:sign",
    "soteria:50",
    "dpsgd:1:0.5",
]
# Written out here, apart from the code: which members act alike (one per chain), and which
# one recomputes the update from the client's data (first, and only once).
FAMILY = {"prune": "mask", "topk": "mask", "precision": "format", "soteria": "soteria"}
REPLACING = {"dpsgd"}


class Tiny(nn.Module):
    """A stride-2 conv, a sigmoid and a classifier Linear over 8 features, from 1×6×6."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.Sigmoid())
        self.classifier = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


@pytest.fixture(scope="module")
def case() -> tuple[SharedUpdate, ClientView]:
    torch.manual_seed(0)
    model = Tiny()
    g = torch.Generator().manual_seed(1)
    batch = PrivateBatch(torch.randn(4, 1, 6, 6, generator=g), torch.tensor([0, 1, 2, 0]))
    client = FedSGDClient(model)
    return client.compute_update(batch), ClientView(model, batch)


def _names(chain: tuple[str, ...]) -> list[str]:
    return [spec.split(":")[0] for spec in chain]


def _expected_refusal(chain: tuple[str, ...]) -> str | None:
    """The reason the chain must be refused, worked out from the spellings alone."""
    names = _names(chain)
    replacing = [i for i, name in enumerate(names) if name in REPLACING]
    if len(replacing) > 1:
        return "both recompute the update from the client's data"
    if replacing and replacing[0] != 0:
        return "recomputes the update from the client's data, so it must come first"
    families = [FAMILY[name] for name in names if name in FAMILY]
    if len(set(families)) < len(families):
        return "give one of them"
    return None


def _apply(chain: list[Defense], case: tuple[SharedUpdate, ClientView]) -> SharedUpdate:
    update, client = case
    return apply_defenses(update, chain, torch.Generator().manual_seed(7), client)


def _same(a: SharedUpdate, b: SharedUpdate) -> bool:
    return all(torch.equal(a.tensors[name], b.tensors[name]) for name in a.tensors)


def _chains() -> list[tuple[str, ...]]:
    pairs = list(itertools.product(MEMBERS, repeat=2))
    triples = list(itertools.product(MEMBERS, repeat=3))
    return pairs + random.Random(0).sample(triples, 150)


@pytest.mark.parametrize("chain", _chains(), ids="+".join)
def test_an_accepted_chain_is_changed_by_each_member(
    chain: tuple[str, ...], case: tuple[SharedUpdate, ClientView]
) -> None:
    reason = _expected_refusal(chain)
    if reason is not None:
        with pytest.raises(GradleakError, match=reason) as info:
            parse_defenses(chain)
        assert "\n" not in str(info.value)
        return
    defenses = parse_defenses(chain)
    full = _apply(defenses, case)
    for i in range(len(defenses)):
        without = _apply(defenses[:i] + defenses[i + 1 :], case)
        assert not _same(full, without), f"{chain[i]} changes nothing in {'+'.join(chain)}"


def test_dpsgd_after_another_defense_would_throw_it_away(
    case: tuple[SharedUpdate, ClientView],
) -> None:
    update, client = case
    dpsgd, prune = parse_defense("dpsgd:1:1"), parse_defense("prune:0.99")
    alone = dpsgd.apply(update, torch.Generator().manual_seed(3), client)
    pruned_first = prune.apply(update, torch.Generator().manual_seed(3), client)
    after = dpsgd.apply(pruned_first, torch.Generator().manual_seed(3), client)
    assert _same(after, alone)  # what the chain would share: DP-SGD alone
    message = (
        "dpsgd recomputes the update from the client's data, so it must come first: "
        "--defense dpsgd:1:1 --defense prune:0.99"
    )
    with pytest.raises(GradleakError) as info:
        parse_defenses(["prune:0.99", "dpsgd:1:1"])
    assert str(info.value) == message
    with pytest.raises(GradleakError) as info:  # a chain built by hand, too
        apply_defenses(update, [prune, dpsgd], torch.Generator(), client)
    assert str(info.value) == message.replace("dpsgd:1:1", "dpsgd:1.0:1.0")
    assert parse_defenses(["dpsgd:1:1", "prune:0.99"]) == [dpsgd, prune]


def test_the_refusal_names_the_order_to_give() -> None:
    with pytest.raises(GradleakError) as info:
        parse_defenses(["noise:gaussian:1e-3", " prune:0.5 ", "dpsgd:1:1", "precision:int8"])
    assert str(info.value) == (
        "dpsgd recomputes the update from the client's data, so it must come first: "
        "--defense dpsgd:1:1 --defense noise:gaussian:1e-3 --defense prune:0.5 "
        "--defense precision:int8"
    )
    with pytest.raises(GradleakError) as info:
        parse_defenses(["prune:0.3", "noise:gaussian:1e-3", "topk:0.5"])
    assert str(info.value) == (
        "prune:0.3 and topk:0.5 both zero entries by magnitude, and the one that zeroes more "
        "leaves the other nothing to do; give one of them"
    )


def test_the_attack_command_refuses_the_order_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    argv = ["attack", "--defense", "prune:0.99", "--defense", "dpsgd:1:1", "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "gradleak: error: dpsgd recomputes the update from the client's data, so it must "
        "come first: --defense dpsgd:1:1 --defense prune:0.99"
    ]
    assert not out.exists()


def test_sweep_and_tradeoff_settings_refuse_the_order() -> None:
    with pytest.raises(GradleakError, match="so it must come first: --defense dpsgd:1:1"):
        parse_spec({"attacks": ["idlg"], "defenses": [["prune:0.99", "dpsgd:1:1"]]})
    config = UtilityConfig(dataset="cifar10", defenses=("prune:0.99", "dpsgd:1:1"))
    with pytest.raises(GradleakError, match="so it must come first: --defense dpsgd:1:1"):
        config.validate()
