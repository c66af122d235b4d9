"""The evaluation side's view of a running attack: scores against the truth, early stop."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from gradleak.attacks.engine.hooks import Observer, StopAttack
from gradleak.attacks.engine.trials import best_trial
from gradleak.metrics import (
    match_reconstructions,
    mse,
    psnr,
)
from gradleak.scenario.case import Case
from gradleak.scenario.snapshots import SnapshotRecorder


def psnr_observer(
    case: Case, stop_at: float | None = None, recorder: SnapshotRecorder | None = None
) -> Observer:
    """Evaluation-side callback: PSNR and MSE of the currently best trial against the truth.

    With `stop_at`, the first time the PSNR reaches it the attack is stopped (once); with a
    `recorder`, pictures of the reconstruction are kept at the recorder's iterations.
    """
    truth01 = case.to_pixels(case.batch.images)
    stopped = False

    def observe(iteration: int, losses: torch.Tensor, images: torch.Tensor) -> Mapping[str, float]:
        nonlocal stopped
        recon01 = case.to_pixels(images[best_trial(losses)])
        order = match_reconstructions(recon01, truth01)
        if recorder is not None and recorder.wants(iteration):
            recorder.observe(iteration, recon01[order])
        value = float(psnr(recon01[order], truth01).mean())
        error = float(mse(recon01[order], truth01).mean())
        if stop_at is not None and value >= stop_at and not stopped:
            stopped = True
            raise StopAttack(f"PSNR {value:.2f} dB reached {stop_at} dB")
        return {"psnr": value, "mse": error}

    return observe
