import re

import pytest

from gradleak.core.errors import GradleakError
from gradleak.report.text import TEXT_DIFF_CSS, text_diff_html, token_diff, write_sentences

TRUTH = ["the", "cat", "sat", "on", "the", "mat"]
RECOVERED = ["the", "mat", "sat", "the", "dog"]


def test_token_statuses_by_hand():
    # Position 0 and 2 agree; the second "the" and "mat" were recovered elsewhere; "cat" and
    # "on" were not recovered; "dog" is not in the truth.
    assert token_diff(TRUTH, RECOVERED) == [
        ("the", "right"),
        ("cat", "missing"),
        ("sat", "right"),
        ("on", "missing"),
        ("the", "moved"),
        ("mat", "moved"),
        ("dog", "extra"),
    ]


def test_each_recovered_token_accounts_for_one_true_token():
    # The recovered "a" is right at position 1, so the true "a" at position 0 is missing.
    assert token_diff(["a", "a"], ["b", "a"]) == [("a", "missing"), ("a", "right"), ("b", "extra")]
    # Two recovered copies, one true token: the second copy is extra.
    assert token_diff(["x", "y"], ["y", "y"]) == [("x", "missing"), ("y", "right"), ("y", "extra")]
    assert token_diff(["x", "y"], ["y", "x"]) == [("x", "moved"), ("y", "moved")]
    assert token_diff(["x"], []) == [("x", "missing")]
    assert token_diff([], ["x"]) == [("x", "extra")]


def test_diff_html_marks_tokens():
    fragment = text_diff_html(TRUTH, RECOVERED)
    original, recovered = re.findall(r"<p>.*?</p>", fragment)
    assert re.findall(r'<span class="tok-(\w+)">(\w+)</span>', original) == [
        ("right", "the"),
        ("missing", "cat"),
        ("right", "sat"),
        ("missing", "on"),
        ("moved", "the"),
        ("moved", "mat"),
    ]
    assert re.findall(r'<span class="tok-(\w+)">(\w+)</span>', recovered) == [("extra", "dog")]
    assert "the mat sat the" in recovered
    assert "<script" not in fragment
    assert "(empty)" in text_diff_html(["x"], [])


def test_diff_html_escapes_tokens():
    fragment = text_diff_html(["<b>", "&", '"q"'], ["<script>alert(1)</script>", "&"])
    assert "<b>" not in fragment and "<script>" not in fragment
    assert '<span class="tok-missing">&lt;b&gt;</span>' in fragment
    assert '<span class="tok-right">&amp;</span>' in fragment  # same place
    assert "&quot;q&quot;" in fragment
    assert '<span class="tok-extra">&lt;script&gt;alert(1)&lt;/script&gt;</span>' in fragment


def test_css_styles_every_status():
    for status in ("right", "moved", "missing", "extra"):
        assert f".tok-{status}" in TEXT_DIFF_CSS
    assert "line-through" in TEXT_DIFF_CSS


def test_sentences_file(tmp_path):
    path = tmp_path / "run" / "sentences.txt"
    write_sentences(path, ["the cat sat", "ça va\nbien"], ["the cat", ""])
    assert path.read_text(encoding="utf-8") == (
        "original:  the cat sat\nrecovered: the cat\n\noriginal:  ça va bien\nrecovered: \n\n"
    )
    write_sentences(path, ["a dog"], ["a dog"])  # replaced whole
    assert path.read_text(encoding="utf-8") == "original:  a dog\nrecovered: a dog\n\n"


def test_sentences_need_pairs(tmp_path):
    with pytest.raises(GradleakError, match="matched to each true one"):
        write_sentences(tmp_path / "sentences.txt", ["a", "b"], ["a"])
    assert not (tmp_path / "sentences.txt").exists()
