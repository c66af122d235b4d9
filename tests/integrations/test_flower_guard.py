"""The client mod `LeakageGuard`, called as Flower calls it, on hand-made messages.

The client takes one SGD step on one image: an analytic attack recovers the image exactly
(PSNR 100 dB), so the guard must replace the update, and what it sends must differ from
the trained model by the defense and nothing else.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

pytest.importorskip("flwr", reason="the Flower integration needs the extra gradleak[flower]")

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, RecordDict  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402

from gradleak.core.batch import PrivateBatch  # noqa: E402
from gradleak.core.errors import GradleakError  # noqa: E402
from gradleak.core.knowledge import Grants  # noqa: E402
from gradleak.integrations.flower import (  # noqa: E402
    AttackPlan,
    CuriousStrategy,
    FlowerTarget,
    LeakageGuard,
)
from gradleak.report.flower import SUMMARY_CSV  # noqa: E402

from .flower_app import (  # noqa: E402
    LR,
    LocalGrid,
    batch_of,
    context,
    metadata,
    net,
    private_batch,
    server_identity,
    target,
    train,
    train_message,
)

NODE, PARTITION, ROUND = 5, 0, 3
PRUNED = 0.9
NOISE_VARIANCE = 1e-2


class Client:
    """`call_next` of a mod: the client's training, keeping a copy of what it returned."""

    def __init__(self) -> None:
        self.calls = 0
        self.returned: Any = None
        self.trained: dict[str, torch.Tensor] = {}

    def __call__(self, msg: Message, ctx: Context) -> Message:
        self.calls += 1
        if msg.metadata.message_type == MessageType.TRAIN:
            answer = train(msg, ctx)
            state = answer.content["arrays"].to_torch_state_dict()
            self.trained = {n: t.clone() for n, t in state.items()}
        else:  # an evaluation: a reply without arrays
            answer = Message(RecordDict({}), reply_to=msg)
        self.returned = answer
        return answer


def _guard(**settings: Any) -> LeakageGuard:
    return LeakageGuard(
        target(), batch_of, **{"plan": AttackPlan("analytic"), "threshold_psnr": 30, **settings}
    )


def _call(guard: LeakageGuard) -> tuple[dict[str, torch.Tensor], Client, Message]:
    """Send one training message through `guard`: the global model, the client, the reply."""
    global_state = {n: t.clone() for n, t in net().state_dict().items()}
    client = Client()
    sent = guard(train_message(global_state, NODE, ROUND), context(NODE, PARTITION), client)
    assert client.calls == 1
    return global_state, client, sent


def _arrays(reply: Message) -> dict[str, torch.Tensor]:
    return dict(reply.content["arrays"].to_torch_state_dict())


def _metrics(reply: Message) -> dict[str, float]:
    return {k: float(v) for k, v in reply.content["metrics"].items()}


def test_a_leaking_update_is_sent_pruned() -> None:
    global_state, client, reply = _call(_guard(defenses=(f"prune:{PRUNED}",)))
    metrics = _metrics(reply)
    assert metrics["gradleak-psnr"] >= 60.0  # the analytic attack recovers the image
    assert metrics["gradleak-defended"] == 1.0
    assert metrics["gradleak-guard-failed"] == 0.0
    assert metrics["gradleak-psnr-sent"] < metrics["gradleak-psnr"]
    assert metrics["num-examples"] == 1  # the client's own metrics are kept
    sent, trained = _arrays(reply), client.trained
    assert sent.keys() == trained.keys()
    for name, start in global_state.items():
        delta = (trained[name].double() - start.double()).flatten()
        # Layer-wise magnitude pruning: the round(p·n) smallest |Δ| become 0, the rest stay.
        kept = delta.numel() - math.floor(PRUNED * delta.numel() + 0.5)
        keep = torch.zeros(delta.numel(), dtype=torch.bool)
        keep[torch.topk(delta.abs(), kept).indices] = True
        keep = keep.reshape(start.shape)
        assert torch.equal(sent[name][~keep], start[~keep]), name
        torch.testing.assert_close(sent[name][keep], trained[name][keep], rtol=0, atol=1e-7)


def _noise(sent: Message, client: Client) -> torch.Tensor:
    """What the guard added to the trained model, all parameters in one vector."""
    arrays, trained = _arrays(sent), client.trained
    return torch.cat([(arrays[n].double() - trained[n].double()).flatten() for n in trained])


def _assert_gaussian(noise: torch.Tensor) -> None:
    """The defense's zero-mean noise of the given variance, on (nearly) every entry: a
    draw below half a float32 step of its weight is rounded away."""
    assert float((noise == 0).double().mean()) < 1e-3
    assert abs(float(noise.mean())) < 0.01
    assert float(noise.var()) == pytest.approx(NOISE_VARIANCE, rel=0.05)


def _assert_independent(first: torch.Tensor, second: torch.Tensor) -> None:
    """Two independent draws: their difference has twice the variance of each."""
    assert float((first - second).var()) == pytest.approx(2 * NOISE_VARIANCE, rel=0.05)


def test_a_leaking_update_is_sent_with_fresh_noise() -> None:
    guard = _guard(defenses=(f"noise:gaussian:{NOISE_VARIANCE}",))
    _, client, reply = _call(guard)
    metrics = _metrics(reply)
    assert metrics["gradleak-psnr"] >= 60.0 and metrics["gradleak-defended"] == 1.0
    assert metrics["gradleak-psnr-sent"] < metrics["gradleak-psnr"]
    first = _noise(reply, client)
    _assert_gaussian(first)
    # Without a seed the server cannot replay the noise: the same message, sent again,
    # carries other noise of the same law.
    _, client, again = _call(guard)
    second = _noise(again, client)
    _assert_gaussian(second)
    _assert_independent(first, second)


def test_a_seeded_guard_sends_the_same_noise_for_the_same_node_and_round() -> None:
    guard = _guard(defenses=(f"noise:gaussian:{NOISE_VARIANCE}",), seed=7)
    _, client, reply = _call(guard)
    first = _noise(reply, client)
    _assert_gaussian(first)
    _, client, again = _call(guard)
    assert torch.equal(_noise(again, client), first)
    # The seed is mixed with the client (its partition id in a simulation, whose node ids
    # change from run to run; else its node id) and the round: another client's differs.
    other = guard(train_message(net().state_dict(), NODE + 1, ROUND), context(NODE + 1, 1), client)
    _assert_independent(_noise(other, client), first)


def test_an_update_below_the_threshold_is_sent_untouched() -> None:
    global_state, client, reply = _call(_guard(threshold_psnr=1000.0))
    assert reply is client.returned
    sent = _arrays(reply)
    assert all(torch.equal(sent[n], client.trained[n]) for n in client.trained)
    metrics = _metrics(reply)
    assert metrics["gradleak-psnr"] >= 60.0
    assert metrics["gradleak-defended"] == 0.0
    assert metrics["gradleak-psnr-sent"] == metrics["gradleak-psnr"]


def test_the_guard_scores_what_the_curious_server_recovers(tmp_path: Path) -> None:
    """A client's guard and the server run the same attack on the same update: same PSNR."""
    plan = AttackPlan("dlg", options={"iterations": 3})
    guard = _guard(plan=plan, threshold_psnr=1000.0)
    partitions = {11: 0, 12: 1}
    server = CuriousStrategy(
        FedAvg(fraction_evaluate=0.0),
        target(),
        tmp_path,
        plan=plan,
        when="after",
        truth=lambda r, node: private_batch(partitions[node], r),
    )
    grid = LocalGrid(partitions, client=lambda msg, ctx: guard(msg, ctx, train))
    with server_identity():
        server.start(
            grid=grid,
            initial_arrays=ArrayRecord(net().state_dict()),
            num_rounds=1,
            train_config=ConfigRecord({"lr": LR}),
        )
    with (tmp_path / SUMMARY_CSV).open(encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(partitions)
    for row in rows:
        assert row["status"] == "ok" and float(row["reply_gradleak-defended"]) == 0.0
        assert row["psnr"] == row["reply_gradleak-psnr"]
        assert float(row["psnr"]) < 60.0  # a partial recovery: the two agree beyond the cap


def test_a_check_that_fails_sends_a_defended_update(caplog: pytest.LogCaptureFixture) -> None:
    # R-GAP refuses an MLP: the guard cannot tell how much leaks, so it defends.
    _, client, reply = _call(_guard(plan=AttackPlan("rgap"), defenses=(f"prune:{PRUNED}",)))
    metrics = _metrics(reply)
    assert metrics["gradleak-guard-failed"] == 1.0
    assert metrics["gradleak-defended"] == 1.0
    assert math.isnan(metrics["gradleak-psnr"])
    assert math.isnan(metrics["gradleak-psnr-sent"])
    assert not all(torch.equal(_arrays(reply)[n], client.trained[n]) for n in client.trained)
    assert any("the leakage check failed" in r.getMessage() for r in caplog.records)


def test_a_message_that_is_not_training_passes_through() -> None:
    guard = _guard()
    msg = Message(
        train_message(net().state_dict(), NODE, ROUND).content,
        metadata=metadata(NODE, MessageType.EVALUATE),
    )
    client = Client()
    reply = guard(msg, context(NODE, PARTITION), client)
    assert client.calls == 1
    assert reply is client.returned
    assert not reply.content.metric_records
    assert not reply.content.array_records


def test_guarded_clients_with_mixed_outcomes_are_aggregated_by_fedavg() -> None:
    """Every guarded reply has the same metric keys, defended or not: FedAvg takes both."""
    leaks = _guard(defenses=(f"prune:{PRUNED}",))
    quiet = _guard(defenses=(f"prune:{PRUNED}",), threshold_psnr=1000.0)
    sent: list[Message] = []

    def client(msg: Message, ctx: Context) -> Message:
        return (leaks if ctx.node_id == 11 else quiet)(msg, ctx, train)

    def keep(answer: Message) -> Message:
        sent.append(answer)
        return answer

    with server_identity():
        result = FedAvg(fraction_evaluate=0.0).start(
            grid=LocalGrid({11: 0, 12: 1}, client=client, reply_hook=keep),
            initial_arrays=ArrayRecord(net().state_dict()),
            num_rounds=1,
            train_config=ConfigRecord({"lr": LR}),
        )
    assert sorted(_metrics(m)["gradleak-defended"] for m in sent) == [0.0, 1.0]
    assert len({frozenset(_metrics(m)) for m in sent}) == 1
    # FedAvg's mean of the two models as sent (one example each).
    states = [_arrays(m) for m in sent]
    final = result.arrays.to_torch_state_dict()
    for name, tensor in final.items():
        mean = (states[0][name].double() + states[1][name].double()) / 2
        torch.testing.assert_close(tensor.double(), mean, rtol=0, atol=1e-6)


def _shuffled_batch_of(msg: Message, ctx: Context) -> PrivateBatch:
    """`batch_of` through a shuffling loader, which draws its order from the global RNG."""
    batch = batch_of(msg, ctx)
    loader = DataLoader(TensorDataset(batch.images, batch.labels), batch_size=1, shuffle=True)
    images, labels = next(iter(loader))
    return PrivateBatch(images, labels)


def _drawn_after_training(guard: LeakageGuard | None) -> torch.Tensor:
    """What the client draws from its global RNG after a round, with or without `guard`."""
    msg, ctx = train_message(net().state_dict(), NODE, ROUND), context(NODE, PARTITION)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        if guard is None:
            train(msg, ctx)
        else:
            assert _metrics(guard(msg, ctx, train))["gradleak-psnr"] >= 60.0
        return torch.rand(8)


@pytest.mark.parametrize("threshold", [1e9, 30.0], ids=["record-only", "defending"])
def test_the_guard_leaves_the_clients_random_state_alone(threshold: float) -> None:
    guard = LeakageGuard(
        target(),
        _shuffled_batch_of,
        plan=AttackPlan("analytic"),
        threshold_psnr=threshold,
        defenses=(f"noise:gaussian:{NOISE_VARIANCE}",),
    )
    assert torch.equal(_drawn_after_training(guard), _drawn_after_training(None))


def test_a_defended_update_goes_out_when_its_recheck_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    guard = _guard(defenses=(f"prune:{PRUNED}",))
    checks = []
    attack = guard._psnr

    def check_then_fail(*args: Any) -> float:
        checks.append(args)
        if len(checks) > 1:
            raise RuntimeError("the recheck broke")
        return attack(*args)

    monkeypatch.setattr(guard, "_psnr", check_then_fail)
    _, client, reply = _call(guard)
    metrics = _metrics(reply)
    assert len(checks) == 2
    assert metrics["gradleak-psnr"] >= 60.0 and metrics["gradleak-defended"] == 1.0
    assert metrics["gradleak-guard-failed"] == 0.0
    assert math.isnan(metrics["gradleak-psnr-sent"])
    assert not all(torch.equal(_arrays(reply)[n], client.trained[n]) for n in client.trained)
    assert any("the recheck broke" in r.getMessage() for r in caplog.records)


def test_a_defended_update_that_still_leaks_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    # Noise far below the image's scale: the analytic attack still recovers it.
    _, _, reply = _call(_guard(defenses=("noise:gaussian:1e-20",)))
    metrics = _metrics(reply)
    assert metrics["gradleak-defended"] == 1.0
    assert metrics["gradleak-psnr-sent"] >= 30.0
    warned = [r for r in caplog.records if r.levelname == "WARNING"]
    assert any("still leaks" in r.getMessage() for r in warned)


def test_without_recheck_the_sent_psnr_is_unknown() -> None:
    _, _, reply = _call(_guard(defenses=(f"prune:{PRUNED}",), recheck=False))
    metrics = _metrics(reply)
    assert metrics["gradleak-defended"] == 1.0 and metrics["gradleak-psnr"] >= 60.0
    assert math.isnan(metrics["gradleak-psnr-sent"])


def test_the_guard_attacks_with_the_plans_grants(monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard's view of the update is the server's: `attack_one` passes the plan's grants."""
    plan = AttackPlan("analytic", grants=Grants(model_mode="eval"))
    granted = []
    view = FlowerTarget.view

    def spy(self: FlowerTarget, *args: Any, **kwargs: Any) -> Any:
        granted.append(kwargs.get("grants"))
        return view(self, *args, **kwargs)

    monkeypatch.setattr(FlowerTarget, "view", spy)
    _call(_guard(plan=plan, defenses=(f"prune:{PRUNED}",)))
    assert granted == [plan.grants, plan.grants]  # the check and the recheck


def test_a_reply_without_its_number_of_examples_is_refused_in_one_line() -> None:
    def client(msg: Message, ctx: Context) -> Message:
        answer = train(msg, ctx)
        del answer.content["metrics"]["num-examples"]
        return answer

    msg = train_message(net().state_dict(), NODE, ROUND)
    with pytest.raises(GradleakError, match="num-examples") as refused:
        _guard()(msg, context(NODE, PARTITION), client)
    assert "\n" not in str(refused.value)
