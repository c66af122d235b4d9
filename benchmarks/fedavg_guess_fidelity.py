"""How far a guessed FedAvg replay is from the shared update, at the client's true data.

For each setting the client trains locally and shares Δ; the attacker's replay of its
believed local training is evaluated on the true images and labels and compared with Δ:
cosine distance (what IG's objective sees) and relative L2 error (what DLG's sees). With
the true settings both are zero up to rounding, so the numbers isolate the cost of the
guess from the attack's own convergence. Also printed: the cosine distance between Δ and
the FedSGD gradient, i.e. how far local training is from one gradient step.

Run from the repository root:
  OMP_NUM_THREADS=1 python benchmarks/fedavg_guess_fidelity.py --data-root ../shared/data
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch.nn import functional as F

from gradleak.attacks.matching.objectives import get_objective
from gradleak.attacks.matching.problem import MatchingProblem, attacker_model
from gradleak.fl import LocalTraining, ProtocolSettings, simulate
from gradleak.fl.replay import Replay
from gradleak.scenario import RunConfig, build_case

SETTINGS = [  # (model, client batch-norm mode, local lr)
    ("resnet20", "eval", 0.01),
    ("resnet20", "train", 0.1),
    ("lenet", "train", 0.1),
]
STEPS = (1, 2, 5, 10)
SAMPLES = (1, 4)


def _flat(tensors: dict[str, torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.flatten().double() for t in tensors.values()])


def measure(data_root: Path) -> list[str]:
    rows = [
        "| model | mode | lr | n | S | cos dist. Δ vs gradient | guess: cos dist. | "
        "guess: rel. L2 error |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model, mode, lr in SETTINGS:
        for n in SAMPLES:
            config = RunConfig(
                model=model, dataset="cifar10", data_root=data_root, batch_size=n, model_mode=mode
            )
            case = build_case(config)
            gradient = _flat(
                simulate(
                    case.server.model,
                    case.client.batch,
                    ProtocolSettings("fedsgd", model_mode=mode),
                ).update.tensors
            )
            for steps in STEPS:
                truth = LocalTraining(lr=lr, steps=steps)
                shared = simulate(
                    case.server.model,
                    case.client.batch,
                    ProtocolSettings("fedavg", truth, model_mode=mode),
                ).update
                delta = _flat(shared.tensors)
                guess = LocalTraining(lr=lr / 10, steps=1)
                problem = MatchingProblem(
                    attacker_model(case.server.model, mode),
                    shared.tensors,
                    get_objective("cosine"),
                    0.0,
                    Replay(1, guess),
                )
                replay = _flat(
                    problem.candidate_update(
                        problem.params, case.client.batch.images, case.client.batch.labels
                    )
                )
                to_gradient = 1 - float(F.cosine_similarity(-delta, gradient, dim=0))
                cos = 1 - float(F.cosine_similarity(replay, delta, dim=0))
                rel = float((replay - delta).norm() / delta.norm())
                rows.append(
                    f"| {model} | {mode} | {lr:g} | {n} | {steps} | {to_gradient:.2e} | "
                    f"{cos:.2e} | {rel:.3f} |"
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    args = parser.parse_args()
    torch.manual_seed(0)
    print("\n".join(measure(args.data_root)))


if __name__ == "__main__":
    main()
