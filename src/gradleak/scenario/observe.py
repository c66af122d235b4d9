"""The evaluation side of a run: it reads the truth, the attack never does.

Its functions decode and score reconstructions against the clients' data, and
offer the engine's callback hook (`psnr_observer`) that adds the PSNR and MSE of the best
trial to the history, keeps snapshots and, with a target PSNR, ends the attack early.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from gradleak.attacks.engine.hooks import Observer, StopAttack
from gradleak.attacks.engine.trials import best_trial
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.core.batch import PrivateBatch
from gradleak.metrics import Evaluation
from gradleak.scenario.case import Case, ServerView
from gradleak.scenario.snapshots import SnapshotRecorder


def score(server: ServerView, truth: PrivateBatch, reconstruction: Reconstruction) -> Evaluation:
    """Score a reconstruction against the private batch behind the update it attacked.

    Labels handed over by the threat model are not scored as a recovery.

    Args:
        server: the attacked server's view (its knowledge says how to decode inputs).
        truth: the private samples behind the attacked update.
        reconstruction: what the attack returned.

    Returns:
        The modality's scores after one-to-one matching of reconstructions to the truth.
    """
    rec = reconstruction
    return server.modality.score(
        server.decode(rec.images),
        server.decode(truth.images),
        rec.labels if rec.labels_recovered else None,
        truth.labels,
    )


def psnr_observer(
    case: Case, stop_at: float | None = None, recorder: SnapshotRecorder | None = None
) -> Observer:
    """Evaluation-side callback: PSNR and MSE of the currently best trial against the truth.

    The best trial is the one with the smallest distance among the losses the engine passes
    (`best_trial`), the one restart selection keeps. With `stop_at`, the first time the
    PSNR reaches it the attack is stopped (the engine then calls the observer no more);
    with a `recorder`, pictures of the reconstruction are kept at the recorder's iterations.

    Args:
        case: the server's view (to decode inputs) and the clients' data (the truth).
        stop_at: end the attack once the PSNR reaches this many dB.
        recorder: keeps the reconstruction at chosen iterations.

    Returns:
        The engine's callback hook.
    """
    server, client = case
    modality = server.modality
    truth = server.decode(client.batch.images)

    def observe(iteration: int, losses: torch.Tensor, images: torch.Tensor) -> Mapping[str, float]:
        recon = server.decode(images[best_trial(losses)])
        order, columns = modality.progress(recon, truth)
        if recorder is not None and recorder.wants(iteration):
            recorder.observe(iteration, recon[order])
        if stop_at is not None and columns["psnr"] >= stop_at:
            raise StopAttack(f"PSNR {columns['psnr']:.2f} dB reached {stop_at} dB", columns)
        return columns

    return observe
