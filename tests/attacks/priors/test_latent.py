"""Generative priors in the matching problem: GGL's latent search and GIAS's fine-tuning."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradleak import attacks
from gradleak.attacks.matching.objectives import get_objective
from gradleak.attacks.matching.problem import MatchingProblem, attacker_model
from gradleak.attacks.priors.generative import (
    GenerativePrior,
    Generator,
    save_generative_prior,
)
from gradleak.attacks.priors.latent import GeneratorDecoder, LatentDecoder, latent_kl
from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.data import normalize
from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case

pytestmark = pytest.mark.usefixtures("one_thread")

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _prior(channels: int = 3, size: int = 32, latent: int = 8) -> GenerativePrior:
    torch.manual_seed(0)
    generator = Generator(latent, channels, size, width=8)
    images = (torch.rand(5, channels, size, size) * 255).to(torch.uint8)
    return GenerativePrior("vae", generator, latent, (channels, size, size), "noise 0-4", images, 1)


def test_the_latent_decoder_gives_the_generators_images_normalised() -> None:
    prior = _prior()
    decoder = LatentDecoder(prior, MEAN, STD)
    z = torch.randn(2, 8, generator=torch.Generator().manual_seed(1))
    expected = normalize(prior.generator(z), MEAN, STD)
    torch.testing.assert_close(decoder.decode(z), expected)


def test_gias_starts_exactly_where_ggl_ended() -> None:
    decoder = LatentDecoder(_prior(), MEAN, STD)
    tuned = GeneratorDecoder(decoder)
    z = torch.randn(3, 2, 8, generator=torch.Generator().manual_seed(2))  # K×B×d
    start = tuned.start(z)
    assert start.shape == (3, 2, 8 + tuned.weights)
    for k in range(3):
        torch.testing.assert_close(tuned.decode(start[k]), decoder.decode(z[k]))
    # Moving one image's weights changes that image only: each image has its own generator.
    moved = start[0].clone()
    moved[1, 8:] += 1.0
    out = tuned.decode(moved)
    torch.testing.assert_close(out[0], decoder.decode(z[0])[0])
    assert not torch.allclose(out[1], decoder.decode(z[0])[1])


def test_the_latent_kl_is_zero_for_a_standard_normal_shape_and_grows_away_from_it() -> None:
    z = torch.randn(4, 4096, generator=torch.Generator().manual_seed(3))
    assert float(latent_kl(z)) < 1e-3
    assert float(latent_kl(3 * z)) > 1.0
    assert float(latent_kl(z + 2)) > 1.0


def test_the_matching_distance_is_zero_at_the_latent_that_made_the_batch() -> None:
    prior = _prior()
    case = build_case(RunConfig(model="lenet", indices=(0,), progress=False))
    knowledge = case.server.knowledge
    decoder = LatentDecoder(prior, knowledge.mean, knowledge.std)
    z_true = torch.randn(1, 8, generator=torch.Generator().manual_seed(4))
    images = decoder.decode(z_true)
    model = case.server.model
    batch = PrivateBatch(images.detach(), case.client.batch.labels)
    target = dict(FedSGDClient(model).compute_update(batch).tensors)
    problem = MatchingProblem(
        attacker_model(model, "train"), target, get_objective("l2"), decoder=decoder
    )
    labels = case.client.batch.labels
    at_truth = problem.distance(z_true, labels)
    elsewhere = problem.distance(torch.zeros_like(z_true), labels)
    assert float(at_truth) < 1e-10
    assert float(elsewhere) > 1e-6


def _saved_prior(tmp_path: Path, channels: int, size: int) -> Path:
    return save_generative_prior(_prior(channels, size), tmp_path / "prior.pt")


@pytest.mark.parametrize("kind", ["gan", "gias"])
def test_ig_with_a_generative_prior_returns_the_generators_images(
    tmp_path: Path, kind: str
) -> None:
    path = _saved_prior(tmp_path, 3, 32)
    case = build_case(RunConfig(model="lenet", indices=(0,), progress=False))
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    attack = attacks.get("ig").with_options(
        {"iterations": 4, "restarts": 2, "priors": [f"{kind}:{path}"]}
    )
    rec = attack.reconstruct(update, case.server.model, case.server.knowledge, progress=False)
    assert rec.images.shape == case.client.batch.images.shape
    assert rec.details["prior_file"] == str(path)
    assert rec.details["prior_trained_on"] == "noise 0-4"
    assert rec.iterations == 4
    pixels = case.server.modality.decode(rec.images, case.server.knowledge)
    assert torch.isfinite(pixels).all()


def test_a_prior_trained_for_other_images_is_refused_before_any_work(tmp_path: Path) -> None:
    path = _saved_prior(tmp_path, 1, 28)
    case = build_case(RunConfig(model="lenet", indices=(0,), progress=False))
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    attack = attacks.get("ig").with_options({"iterations": 2, "priors": [f"gan:{path}"]})
    with pytest.raises(GradleakError, match="1×28×28"):
        attack.reconstruct(update, case.server.model, case.server.knowledge, progress=False)


def test_gias_keeps_a_fine_tuned_image_only_where_it_matches_at_least_as_well() -> None:
    from gradleak.attacks.engine.status import TrialStatus
    from gradleak.attacks.engine.trials import TrialsResult
    from gradleak.attacks.gradient_matching import _keep_better
    from gradleak.attacks.reconstruction import Status

    ok, stalled = TrialStatus(Status.OK, ""), TrialStatus(Status.NO_PROGRESS, "stalled")

    def result(distances: list[float], statuses, rows) -> TrialsResult:
        return TrialsResult(
            torch.zeros(3, 1, 1),
            torch.zeros(3, 1, dtype=torch.long),
            torch.tensor(distances),
            history=[{"iteration": i, "loss": 0.0} for i in rows],
            iterations=rows[-1],
            trial_iterations=[rows[-1]] * 3,
            distances=torch.tensor(distances),
            statuses=statuses,
        )

    first = result([0.5, 0.2, float("nan")], [ok, ok, ok], [0, 5])
    second = result([0.4, 0.3, 0.9], [ok, stalled, ok], [0, 5])
    first_images = torch.stack([torch.full((1, 1), v) for v in (1.0, 2.0, 3.0)])
    second_images = -first_images
    kept = _keep_better(first, first_images, second, second_images)
    # Trial 0 improved, trial 1 got worse, trial 2's first half had no finite distance.
    assert kept.images.flatten().tolist() == [-1.0, 2.0, -3.0]
    assert kept.distances.tolist() == pytest.approx([0.4, 0.2, 0.9])
    assert kept.statuses == [ok, ok, ok]
    assert [row["iteration"] for row in kept.history] == [0, 5, 10]  # no repeated row
    assert kept.iterations == 10 and kept.trial_iterations == [10, 10, 10]


@pytest.mark.parametrize("priors", [["gias:PRIOR"], ["tv", "bn-server"]])
def test_the_same_seed_gives_the_same_reconstruction_with_priors(
    tmp_path: Path, priors: list[str]
) -> None:
    path = _saved_prior(tmp_path, 3, 32)
    case = build_case(RunConfig(model="resnet20", indices=(0,), progress=False))
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    options = {
        "iterations": 4,
        "restarts": 2,
        "group_consistency": 2,
        "group_every": 2,
        "priors": [p.replace("PRIOR", str(path)) for p in priors],
    }
    attack = attacks.get("ig").with_options(options)

    def run(seed: int) -> torch.Tensor:
        return attack.reconstruct(
            update, case.server.model, case.server.knowledge, seed=seed, progress=False
        ).images

    first = run(0)
    assert torch.equal(first, run(0))
    assert not torch.equal(first, run(1))
