"""The learned inversion attack: one forward pass, its checks, its registry name, its quality."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gradleak import attacks
from gradleak.attacks.learned import LearnedInversionAttack
from gradleak.attacks.priors.inverter import LearnedInverter, load_inverter
from gradleak.attacks.reconstruction import Reconstruction
from gradleak.attacks.registry import (
    AttackChoices,
    attack_label,
    attack_modalities,
    available,
    split_attack_name,
)
from gradleak.core.errors import GradleakError
from gradleak.fl import FedSGDClient
from gradleak.fl.replay import Replay
from gradleak.scenario import RunConfig, build_case
from gradleak.scenario.case import Case
from gradleak.training.inverter import InverterTrainConfig, train_inverter

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(root: Path, out: Path, **changes: object) -> Path:
    settings: dict[str, object] = {
        "model": "lenet",
        "dataset": "folder",
        "data_root": root,
        "image_size": 8,
        "range": (0, 7),
        "sketch_dim": 128,
        "hidden": 64,
        "updates": 16,
        "epochs": 2,
        "train_batch": 16,
    }
    settings.update(changes)
    train_inverter(InverterTrainConfig(**settings), out, progress=False)  # type: ignore[arg-type]
    return out


def _case(root: Path, **changes: object) -> tuple[Case, object]:
    settings: dict[str, object] = {
        "model": "lenet",
        "dataset": "folder",
        "data_root": root,
        "image_size": 8,
        "indices": (0,),
        "progress": False,
    }
    settings.update(changes)
    case = build_case(RunConfig(**settings))  # type: ignore[arg-type]
    update = FedSGDClient(case.server.model).compute_update(case.client.batch)
    return case, update


def test_the_attack_reconstructs_in_one_pass(image_folder: Path, tmp_path: Path) -> None:
    path = _train(image_folder, tmp_path / "inv.pt")
    attack = attacks.get(f"learned:{path}")
    assert isinstance(attack, LearnedInversionAttack)
    assert attack.name == f"learned:{path}" and attack.reads == {attack.inverter.update_kind}
    assert attack.config.iterations == 0 and attack.config.restarts == 1
    case, update = _case(image_folder)
    before = {k: v.clone() for k, v in case.server.model.state_dict().items()}
    rec = attack.reconstruct(update, case.server.model, case.server.knowledge)  # type: ignore[arg-type]
    assert isinstance(rec, Reconstruction)
    assert rec.images.shape == (1, 3, 8, 8) and rec.iterations == 0
    assert rec.labels is not None and rec.labels.shape == (1,)
    assert rec.label_strategy == "analytic"
    assert 0.0 <= rec.loss <= 2.0 and rec.trial_losses == [rec.loss]
    assert rec.details["inverter_file"] == str(path)
    assert all(torch.equal(v, case.server.model.state_dict()[k]) for k, v in before.items())


def test_a_batch_gets_a_batch(image_folder: Path, tmp_path: Path) -> None:
    path = _train(image_folder, tmp_path / "inv.pt", batch_size=2)
    case, update = _case(image_folder, batch_size=2)
    rec = attacks.get(f"learned:{path}").reconstruct(
        update,  # type: ignore[arg-type]
        case.server.model,
        case.server.knowledge,
    )
    assert rec.images.shape == (2, 3, 8, 8)
    assert rec.labels is not None and rec.labels.shape == (2,) and rec.label_strategy == "sign"
    assert rec.loss != rec.loss  # NaN: a batch's images and labels are not paired


def test_a_mismatched_model_is_refused_before_any_work(
    image_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _train(image_folder, tmp_path / "inv.pt")
    attack = attacks.get(f"learned:{path}")
    called: list[bool] = []
    monkeypatch.setattr(LearnedInverter, "invert", lambda *a: called.append(True))
    case, update = _case(image_folder, seed=1)  # another init of the server model
    with pytest.raises(GradleakError, match="the server model has another state") as refused:
        attack.reconstruct(update, case.server.model, case.server.knowledge)  # type: ignore[arg-type]
    assert "\n" not in str(refused.value) and not called
    with pytest.raises(GradleakError, match="but the server model differs"):
        attack.check_model(case.server.model, (3, 8, 8), 1)  # type: ignore[attr-defined]


def test_memorised_images_are_reconstructed_far_better_than_chance(
    image_folder: Path, tmp_path: Path
) -> None:
    """Ground truth: trained (without augmentation) on the very images it then inverts, the
    inverter must reproduce them; its MSE must be far below that of a random image."""
    path = _train(image_folder, tmp_path / "inv.pt", augment=False, updates=32, epochs=40, lr=3e-3)
    attack = attacks.get(f"learned:{path}")
    for index in (0, 5):
        case, update = _case(image_folder, indices=(index,))
        rec = attack.reconstruct(update, case.server.model, case.server.knowledge)  # type: ignore[arg-type]
        truth = case.server.decode(case.client.batch.images)
        recon = case.server.decode(rec.images)
        random = torch.rand(truth.shape, generator=torch.Generator().manual_seed(index))
        mse, chance = float((recon - truth).pow(2).mean()), float((random - truth).pow(2).mean())
        assert mse < 0.05 * chance, (index, mse, chance)
        assert rec.loss < 0.05  # the reconstruction's own update nearly matches the shared one
        nearest, found = attack.inverter.nearest_training_images(recon)  # type: ignore[attr-defined]
        assert int(found[0]) == index
        assert float((nearest - recon).pow(2).mean()) == pytest.approx(mse, abs=1e-3)


def test_options(image_folder: Path, tmp_path: Path) -> None:
    path = _train(image_folder, tmp_path / "inv.pt")
    attack = attacks.get(f"learned:{path}")
    with pytest.raises(GradleakError, match="does not iterate"):
        attack.with_options({"iterations": 10})
    with pytest.raises(GradleakError, match="unknown key 'lr'"):
        attack.with_options({"lr": 0.1})
    with pytest.raises(GradleakError, match="inverter file not found"):
        attack.with_options({"path": str(tmp_path / "missing.pt")})


def test_registry_names_with_an_argument(tmp_path: Path) -> None:
    assert split_attack_name("learned:a/b.pt") == ("learned", "a/b.pt")
    assert split_attack_name("ig") == ("ig", None)
    assert "learned" not in available() and all(":" not in n for n in available())
    assert attack_modalities("learned:x.pt") == ("image",)
    assert attack_modalities("dlg:x") is None and attack_modalities("nope") is None
    choices = AttackChoices()
    assert "learned:x.pt" in choices and "dlg" in choices and "gan" not in choices
    assert "dlg:x" not in choices and "learned" in choices  # get names what it lacks
    assert list(choices) == available()
    assert attack_label("learned:/tmp/priors/inv-resnet20-b1.pt") == "learned-inv-resnet20-b1"
    with pytest.raises(
        GradleakError, match=r"attack 'learned' needs its PATH: --attack learned:PATH"
    ):
        attacks.get("learned")
    with pytest.raises(GradleakError, match="inverter file not found"):
        attacks.get(f"learned:{tmp_path / 'missing.pt'}")
    with pytest.raises(GradleakError, match="attack 'dlg' takes no argument"):
        attacks.get("dlg:x")
    with pytest.raises(GradleakError, match="learned:PATH"):
        attacks.get("gan")


def test_the_inverters_output_seeds_an_optimisation_attack(
    image_folder: Path, tmp_path: Path
) -> None:
    path = _train(image_folder, tmp_path / "inv.pt")
    case, update = _case(image_folder)
    knowledge = case.server.knowledge
    start = load_inverter(path).invert(update)
    # A step too small to move the pixels: the kept trial is the inverter's output, boxed.
    attack = attacks.get("ig").with_options(
        {"init": f"learned:{path}", "iterations": 1, "restarts": 1, "lr": 1e-12}
    )
    rec = attack.reconstruct(update, case.server.model, knowledge, progress=False)
    low, high = case.server.modality.bounds(knowledge)
    torch.testing.assert_close(rec.images, start.clamp(low, high), atol=1e-6, rtol=0)
    # Restarts after the first start near it, not at it.
    spread = attacks.get("ig").with_options(
        {"init": f"learned:{path}", "iterations": 1, "restarts": 3, "lr": 1e-12}
    )
    images, _ = spread._initial(  # noqa: SLF001 - the starts themselves are the subject
        spread._problem(update, case.server.model, knowledge, Replay()),  # noqa: SLF001
        knowledge,
        None,
        0,
        start,
    )
    assert torch.equal(images[0], start)
    assert 0 < float((images[1] - start).abs().mean()) < 0.2


def test_a_learned_start_for_another_model_is_refused_before_any_work(
    image_folder: Path, tmp_path: Path
) -> None:
    path = _train(image_folder, tmp_path / "inv.pt")
    case, update = _case(image_folder, seed=5)  # another initialisation: another model state
    attack = attacks.get("ig").with_options({"init": f"learned:{path}", "iterations": 1})
    with pytest.raises(GradleakError, match="train-inverter"):
        attack.reconstruct(update, case.server.model, case.server.knowledge, progress=False)
