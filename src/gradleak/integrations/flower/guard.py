"""A Flower client mod that checks how much a client's update leaks before it is sent.

`LeakageGuard` sits in a `ClientApp`'s mods. After the client has trained, and before its
reply leaves, it attacks the client's own update exactly as the server could (the server's
view: the global model received, the data's format, the reported number of examples, what
the plan's threat model grants) and scores the reconstruction against the batch the client
trained on, which only the client has. Above a PSNR threshold it replaces the update by a
defended one (gradleak's defenses, e.g. Gaussian noise or pruning) and says so in the
reply's metrics. Every guarded reply carries the same four metrics:

- `gradleak-psnr`: the PSNR of the server's best reconstruction of the update as trained
  (NaN where the check failed);
- `gradleak-defended`: 1 where the update was replaced, else 0;
- `gradleak-guard-failed`: 1 where the check itself failed (the update is then defended);
- `gradleak-psnr-sent`: the PSNR of what was sent: `gradleak-psnr` for an update sent
  untouched; with `recheck`, the same attack's PSNR on the defended update; NaN for a
  defended update without `recheck`, or where the check failed.

Flower's FedAvg refuses replies whose metrics have different keys, so in a FedAvg run every
client must use the guard: an unguarded client's reply has none of these keys.

The guard's randomness (the defenses' noise, a model factory's initialisation) never
touches the client's global torch RNG: the client's training draws the same numbers with
and without it. The defenses' noise is fresh OS randomness in every round unless a `seed`
is given; a seed makes runs reproducible, but a server that knows it can replay the noise
and remove it, so a seed is for experiments only.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.update import SharedUpdate
from gradleak.defenses import ClientView, apply_defenses, parse_defenses
from gradleak.integrations.flower._flwr import flwr_app
from gradleak.integrations.flower.messages import message_state, num_examples
from gradleak.integrations.flower.target import FlowerTarget, weight_update
from gradleak.integrations.flower.worker import AttackPlan
from gradleak.scenario.captured import attack_captured

LOG = logging.getLogger("gradleak.flower")

# The client's own private batch of a training message: (message, context) → batch.
BatchOf = Callable[[Any, Any], PrivateBatch]
PREFIX = "gradleak-"
NAN = float("nan")


class LeakageGuard:
    """A client mod `(msg, context, call_next) -> Message` that defends leaking updates.

    Args:
        target: how the server reads this client's reply (the same as the server's).
        private_batch: the batch the client trains on for a message (normalised images
            and labels, in the order it trains on them).
        plan: the attack the client runs on itself, with the server's grants (default:
            DLG's preset, 300 steps; a quick check should be quicker than the server's
            full attack).
        threshold_psnr: replace updates whose reconstruction reaches this PSNR (dB).
        defenses: gradleak defense specs applied to a leaking update, in order
            (`gradleak list`), e.g. ("noise:gaussian:1e-4",) or ("prune:0.9",).
        recheck: attack the defended update too and report its PSNR.
        seed: None (default): the defenses draw fresh OS randomness for every update. An
            integer, mixed with the node id and the round, makes the defenses reproducible:
            for experiments only, since a server that knows the seed can remove the noise.

    Raises:
        GradleakError: a bad target, plan, threshold or defense spec (when the mod is made).
    """

    def __init__(
        self,
        target: FlowerTarget,
        private_batch: BatchOf,
        *,
        plan: AttackPlan | None = None,
        threshold_psnr: float = 20.0,
        defenses: Sequence[str] = ("noise:gaussian:1e-4",),
        recheck: bool = True,
        seed: int | None = None,
    ) -> None:
        if not isinstance(target, FlowerTarget):
            raise GradleakError(f"target must be a FlowerTarget, not {type(target).__name__}")
        if not callable(private_batch):
            raise GradleakError("private_batch must be a function (message, context) -> batch")
        if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
            raise GradleakError(f"seed must be an integer or None, not {seed!r}")
        self.target = target
        self.private_batch = private_batch
        self.plan = plan or AttackPlan("dlg", clients=None)
        self.threshold_psnr = float(threshold_psnr)
        self.defenses = tuple(parse_defenses(list(defenses)))
        if not self.defenses:
            raise GradleakError("a guard needs at least one defense to apply; e.g. prune:0.9")
        self.recheck = recheck
        self.seed = seed

    def __call__(self, msg: Any, context: Any, call_next: Callable[[Any, Any], Any]) -> Any:
        app = flwr_app()
        if msg.metadata.message_type != app.MessageType.TRAIN:
            return call_next(msg, context)
        global_state = message_state(msg, self.target.arrays_key)
        reply = call_next(msg, context)
        if reply.has_error():
            return reply
        server_round = int(msg.content.config_records.get("config", {}).get("server-round", 0))
        # The check runs on the client's thread, after its training: a forked CPU RNG keeps
        # the client's global random state as its training left it.
        with torch.random.fork_rng(devices=[]):
            report = self._check(msg, context, reply, global_state, server_round)
        metrics = reply.content.metric_records.get(self.target.metrics_key)
        if metrics is None:
            metrics = app.MetricRecord({})
            reply.content[self.target.metrics_key] = metrics
        for key, value in report.items():
            metrics[PREFIX + key] = float(value)
        return reply

    def _check(
        self,
        msg: Any,
        context: Any,
        reply: Any,
        global_state: dict[str, torch.Tensor],
        server_round: int,
    ) -> dict[str, float]:
        """Attack the reply's update; replace it in `reply` where it leaks."""
        target = self.target
        # A reply that cannot be read as an update raises: Flower then reports an error
        # and nothing leaves the client.
        samples = num_examples(reply, target)
        local_state = message_state(reply, target.arrays_key)
        model = target.build_model(global_state)
        parameters = target.parameter_names
        update = weight_update(global_state, local_state, parameters, {"num_samples": samples})
        batch = self.private_batch(msg, context)
        failed = False
        try:
            psnr = self._psnr(update, global_state, batch)
        except Exception as exc:  # noqa: BLE001 - a check that fails must not let a leak out
            LOG.error(
                "gradleak guard: the leakage check failed (%s); sending a defended update",
                exc,
                exc_info=exc,
            )
            failed, psnr = True, NAN
        report = {"psnr": psnr, "defended": 0.0, "guard-failed": float(failed), "psnr-sent": psnr}
        if not failed and psnr < self.threshold_psnr:
            return report
        generator = torch.Generator().manual_seed(self._noise_seed(context, server_round))
        defended = self._defend(update, model, batch, generator)
        new_state = dict(local_state)
        for name, delta in defended.tensors.items():
            new_state[name] = (global_state[name].double() + delta.double()).to(
                local_state[name].dtype
            )
        reply.content[target.arrays_key] = flwr_app().ArrayRecord(new_state)
        report |= {"defended": 1.0, "psnr-sent": NAN}
        if self.recheck and not failed:
            report["psnr-sent"] = self._recheck(defended, global_state, batch)
        return report

    def _recheck(
        self, defended: SharedUpdate, global_state: dict[str, torch.Tensor], batch: PrivateBatch
    ) -> float:
        """The attack's PSNR on the defended update (NaN where the attack fails)."""
        try:
            psnr = self._psnr(defended, global_state, batch)
        except Exception as exc:  # noqa: BLE001 - the defended update goes out regardless
            LOG.error(
                "gradleak guard: the recheck of the defended update failed (%s)",
                exc,
                exc_info=exc,
            )
            return NAN
        if psnr >= self.threshold_psnr:
            LOG.warning(
                "gradleak guard: the defended update still leaks (PSNR %.1f dB ≥ %.1f dB); "
                "use stronger defenses",
                psnr,
                self.threshold_psnr,
            )
        return psnr

    def _psnr(
        self, update: SharedUpdate, global_state: dict[str, torch.Tensor], batch: PrivateBatch
    ) -> float:
        """The PSNR of the plan's attack on `update`, in the server's view."""
        samples = int(update.num_samples or len(batch))
        view = self.target.view(global_state, samples, grants=self.plan.grants)
        read = self.target.read(update, samples)
        outcome = attack_captured(
            view, read, self.plan.build(), name=self.plan.attack, seed=self.plan.seed, truth=batch
        )
        assert outcome.evaluation is not None  # scored: the truth was given
        return float(outcome.evaluation.psnr)

    def _noise_seed(self, context: Any, server_round: int) -> int:
        """The defenses' seed: fresh OS randomness, or the given seed, node and round."""
        if self.seed is None:
            return int.from_bytes(os.urandom(8), "little") % 2**63
        # A simulation's partition id names the client the same in every run (Flower draws
        # new node ids each time), so a seeded experiment repeats.
        node = context.node_config.get("partition-id", context.node_id)
        mixed = hashlib.sha256(f"{self.seed}:{node}:{server_round}".encode())
        return int.from_bytes(mixed.digest()[:8], "little") % 2**63

    def _defend(
        self,
        update: SharedUpdate,
        model: torch.nn.Module,
        batch: PrivateBatch,
        generator: torch.Generator,
    ) -> SharedUpdate:
        protocol = self.target.protocol_settings(len(batch))
        start = self.target.build_model({n: t for n, t in model.state_dict().items()})
        view = ClientView(model, batch, local=protocol.local, start=start)
        return apply_defenses(update, self.defenses, generator, view)
