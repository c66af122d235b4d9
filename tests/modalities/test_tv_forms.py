"""The two forms of the total-variation prior against values worked out by hand."""

from __future__ import annotations

import pytest
import torch

from gradleak.attacks import GradientMatchingConfig
from gradleak.core.errors import GradleakError
from gradleak.modalities.image import TV_FORMS, padded_total_variation, total_variation


def test_padded_tv_of_a_known_image() -> None:
    x = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).view(1, 1, 2, 2)
    # Per pixel |right − x| + |below − x|, outside pixels 0:
    # (0,0): 1 + 2, (0,1): 1 + 2, (1,0): 1 + 2, (1,1): 3 + 3 → 15 over 4 pixels.
    assert float(padded_total_variation(x)) == pytest.approx(15 / 4)
    # Interior only: horizontal |1|, |1| (mean 1) + vertical |2|, |2| (mean 2).
    assert float(total_variation(x)) == pytest.approx(3.0)


def test_padded_tv_pulls_a_flat_image_toward_zero() -> None:
    flat = torch.full((2, 3, 4, 4), 0.5)
    assert float(total_variation(flat)) == 0.0  # a flat image costs nothing inside
    # Only the last column (dx) and the last row (dy) step down to 0: 2 × 4 of 16 pixels.
    assert float(padded_total_variation(flat)) == pytest.approx(0.5 * 8 / 16)
    assert float(padded_total_variation(torch.zeros(1, 1, 4, 4))) == 0.0


def test_the_attack_names_its_tv_form() -> None:
    assert set(TV_FORMS) == {"interior", "padded"}
    assert GradientMatchingConfig(tv_form="padded").validate().tv_form == "padded"
    with pytest.raises(GradleakError, match="tv_form .edge. is not one of: auto, interior, padded"):
        GradientMatchingConfig(tv_form="edge").validate()
