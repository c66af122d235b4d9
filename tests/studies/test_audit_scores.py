"""The audit's parts: budget and gate parsing, per-item and summary scores, the verdict,
and which attacks apply to which model."""

from __future__ import annotations

import pytest
from torch import nn

from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import Knowledge
from gradleak.core.update import UpdateKind
from gradleak.studies.audit.scores import (
    RECOGNISABLE_SSIM,
    AttackSummary,
    ItemScore,
    image_leakage,
    overall,
    summarise,
    verdict,
)
from gradleak.studies.audit.selection import (
    DLG_MAX_PARAMETERS,
    AuditTarget,
    check_attack_names,
    label_strategy,
    select_attacks,
    strongest_priors,
)
from gradleak.studies.audit.settings import Gate, parse_budget, parse_gate


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0), (" 2M ", 120.0)],
)
def test_budget_units(text: str, seconds: float) -> None:
    assert parse_budget(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "10d", "-5", "0", "0s", "10 minutes", "8d", "200h"])
def test_bad_budgets_are_one_line_errors(text: str) -> None:
    with pytest.raises(GradleakError, match="budget") as info:
        parse_budget(text)
    assert "\n" not in str(info.value)


def test_gates_parse_and_refuse_unknown_keys() -> None:
    assert parse_gate("psnr=20") == Gate("psnr", 20.0)
    assert parse_gate("Recognisable = 0.1") == Gate("recognisable", 0.1)
    with pytest.raises(GradleakError, match="unknown key 'accuracy'.*psnr"):
        parse_gate("accuracy=0.5")
    with pytest.raises(GradleakError, match="KEY=VALUE"):
        parse_gate("psnr")
    with pytest.raises(GradleakError, match="not a number"):
        parse_gate("psnr=high")
    with pytest.raises(GradleakError, match="finite"):
        parse_gate("psnr=inf")


def test_leakage_is_zero_at_the_baseline_and_one_for_an_exact_copy() -> None:
    assert image_leakage(100.0, 1.0, 0.0, 0.2, 0.05) == (1.0, True)
    leakage, recognisable = image_leakage(12.0, 0.2, 0.05, 0.2, 0.05)
    assert leakage == pytest.approx(0.0) and not recognisable
    # Halfway from the mean image's SSIM to 1.
    assert image_leakage(20.0, 0.6, 0.01, 0.2, 0.05)[0] == pytest.approx(0.5)
    # Worse than the mean image: negative.
    assert image_leakage(8.0, 0.1, 0.1, 0.2, 0.05)[0] < 0
    # Below the SSIM window: the share of the mean image's error removed.
    assert image_leakage(30.0, None, 0.01, None, 0.04) == (pytest.approx(0.75), True)
    assert image_leakage(RECOGNISABLE_SSIM, RECOGNISABLE_SSIM, 0.1, 0.0, 1.0)[1]


def _item(attack: str, sample: int, ssim: float, psnr: float, label: bool | None) -> ItemScore:
    leakage, recognisable = image_leakage(psnr, ssim, 10 ** (-psnr / 10), 0.1, 0.05)
    return ItemScore(attack, sample, 0, sample, leakage, recognisable, label, psnr=psnr, ssim=ssim)


def test_summaries_take_medians_worst_cases_and_the_union_of_recognisable_items() -> None:
    a = [
        _item("a", 0, 0.9, 30.0, True),
        _item("a", 1, 0.1, 10.0, False),
        _item("a", 2, 0.2, 12.0, True),
    ]
    b = [
        _item("b", 0, 0.3, 15.0, None),
        _item("b", 1, 0.7, 25.0, None),
        _item("b", 2, 0.2, 11.0, None),
    ]
    sa, sb = summarise(a), summarise(b)
    assert sa["psnr"] == 12.0 and sa["worst-psnr"] == 30.0
    assert sa["ssim"] == 0.2 and sa["worst-ssim"] == 0.9
    assert sa["labels"] == pytest.approx(2 / 3) and sb["labels"] is None
    assert sa["recognisable"] == pytest.approx(1 / 3)
    summaries = [
        AttackSummary("a", "", "ran", scores=sa),
        AttackSummary("b", "", "ran", scores=sb),
        AttackSummary("c", "", "skipped", "does not apply"),
    ]
    row = overall(summaries, a + b)
    # Items 0 (by a) and 1 (by b) are recognisable: two of the three private images.
    assert row["items"] == 3 and row["recognisable"] == pytest.approx(2 / 3)
    assert row["psnr"] == 15.0 and row["by"]["psnr"] == "b"
    assert row["worst-psnr"] == 30.0 and row["by"]["worst-psnr"] == "a"
    result = verdict(
        row, summaries, [Gate("psnr", 14.0), Gate("ssim", 0.5), Gate("exact", 0.0)], "60 s"
    )
    assert result.level == "LEAKS" and "2 of 3" in result.summary
    assert result.failed == (Gate("psnr", 14.0),) and result.unmet == (Gate("exact", 0.0),)
    assert not result.passed


def test_verdict_without_recognisable_items() -> None:
    items = [_item("a", 0, 0.1, 10.0, True), _item("a", 1, 0.15, 11.0, True)]
    summaries = [AttackSummary("a", "", "ran", scores=summarise(items))]
    result = verdict(overall(summaries, items), summaries, [Gate("recognisable", 0.0)], "1 s")
    assert result.level == "LABELS LEAK" and result.passed
    items = [_item("a", 0, 0.1, 10.0, False)]
    summaries = [AttackSummary("a", "", "ran", scores=summarise(items))]
    result = verdict(overall(summaries, items), summaries, [], "1 s")
    assert result.level == "NO LEAK FOUND" and "may still succeed" in result.summary


def _knowledge(batch_size: int = 1) -> Knowledge:
    return Knowledge((3, 8, 8), 4, batch_size, (0.5,) * 3, (0.5,) * 3)


def test_attacks_follow_the_model_and_the_update() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Linear(16, 4))
    cnn = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(144, 4)
    )
    gradient = UpdateKind.GRADIENT
    names = {
        s.candidate.attack: s for s in select_attacks(AuditTarget(mlp, _knowledge(), gradient))
    }
    # Text attacks are not listed for images.
    assert list(names) == ["labels", "analytic", "spear", "dlg", "ig"]
    assert all(s.attack is not None for n, s in names.items() if n != "spear")
    assert "analytic attack reads it" in str(names["spear"].reason)
    on_batch = {
        s.candidate.attack: s for s in select_attacks(AuditTarget(mlp, _knowledge(4), gradient))
    }
    assert on_batch["spear"].attack is not None
    on_cnn = {
        s.candidate.attack: s for s in select_attacks(AuditTarget(cnn, _knowledge(), gradient))
    }
    assert on_cnn["analytic"].attack is None
    assert "does not read the flattened image" in str(on_cnn["analytic"].reason)
    on_cnn_batch = {
        s.candidate.attack: s for s in select_attacks(AuditTarget(cnn, _knowledge(4), gradient))
    }
    assert on_cnn_batch["spear"].attack is None
    assert strongest_priors(AuditTarget(cnn, _knowledge(), gradient)) == ("tv", "bn")
    assert strongest_priors(AuditTarget(mlp, _knowledge(), gradient)) == ("tv",)
    big = nn.Sequential(nn.Flatten(), nn.Linear(192, DLG_MAX_PARAMETERS // 192 + 1))
    on_big = {
        s.candidate.attack: s for s in select_attacks(AuditTarget(big, _knowledge(), gradient))
    }
    assert on_big["dlg"].attack is None and "parameters" in str(on_big["dlg"].reason)
    only = {
        s.candidate.attack: s
        for s in select_attacks(AuditTarget(mlp, _knowledge(), gradient), ["ig"])
    }
    assert only["ig"].attack is not None and only["dlg"].attack is None


def test_label_readings_follow_batch_size_and_update_kind() -> None:
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(192, 4))
    assert label_strategy(AuditTarget(mlp, _knowledge(1), UpdateKind.WEIGHT_DELTA)) == "analytic"
    assert label_strategy(AuditTarget(mlp, _knowledge(4), UpdateKind.GRADIENT)) == "count"
    assert label_strategy(AuditTarget(mlp, _knowledge(4), UpdateKind.WEIGHT_DELTA)) == "optimize"


def test_unknown_attack_names_are_refused() -> None:
    assert check_attack_names(["ig", "dlg"]) == ("ig", "dlg")
    with pytest.raises(GradleakError, match="'rgap' is not an attack the audit runs"):
        check_attack_names(["rgap"])


def test_nothing_measured_is_said_and_fails_every_gate() -> None:
    summaries = [AttackSummary("a", "", "failed", "boom")]
    row = overall(summaries, [])
    assert row["items"] == 0 and row["recognisable"] is None
    result = verdict(row, summaries, [Gate("psnr", 1.0)], "1 s")
    assert result.level == "NOT MEASURED"
    assert result.unmet == (Gate("psnr", 1.0),) and not result.passed


def test_a_searching_closed_form_is_held_to_its_share_of_the_time() -> None:
    from gradleak import attacks
    from gradleak.studies.audit import runner

    spear = runner._time_limited(attacks.get("spear"), 3.0)
    assert spear.config.time_limit == 3.0
    assert runner._time_limited(attacks.get("spear"), -1.0).config.time_limit == 0.1
    analytic = attacks.get("analytic")
    assert runner._time_limited(analytic, 3.0) is analytic
