"""Sentences: read from a UTF-8 file or given directly, checked, tokenized into one padded
batch of token ids, and masked for masked-language modelling.

The bundled set `samples/sentences.txt` holds 40 English sentences of 5–40 words written
for gradleak (one per line); it is the default text of `--modality text`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from gradleak.core.errors import GradleakError

BUNDLED_SENTENCES = Path(__file__).resolve().parent / "samples" / "sentences.txt"
MLM_MASK_RATE = 0.15  # BERT's share of masked positions (at least one per sentence)


@dataclass(frozen=True)
class EncodedText:
    """A batch of sentences as token ids.

    Attributes:
        ids: B×L token ids, [CLS] first and [SEP] last, padded with the pad id.
        lengths: each sentence's length in tokens ([CLS] and [SEP] included).
        sentences: the sentences as given.
    """

    ids: torch.Tensor
    lengths: tuple[int, ...]
    sentences: tuple[str, ...]


def read_sentences(path: Path) -> list[str]:
    """The non-blank lines of a UTF-8 text file, stripped: one sentence per line.

    Raises:
        GradleakError: a missing or unreadable file, one that is not UTF-8, or one with no
            sentence.
    """
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise GradleakError(f"cannot read the sentence file {path}: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise GradleakError(
            f"the sentence file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from None
    sentences = [line.strip() for line in text.splitlines() if line.strip()]
    if not sentences:
        raise GradleakError(f"the sentence file {path} holds no sentence; put one per line")
    return sentences


def check_sentences(sentences: list[str]) -> None:
    """Refuse an empty or blank sentence in one line."""
    for i, sentence in enumerate(sentences):
        if not sentence.strip():
            raise GradleakError(f"text {i + 1} is empty; give every --text at least one word")


def encode(sentences: list[str], tokenizer: Any, max_length: int) -> EncodedText:
    """Tokenize `sentences` into one batch padded to the longest.

    Args:
        sentences: the batch, non-empty strings.
        tokenizer: the model's tokenizer (`gradleak.models.text.load_tokenizer`).
        max_length: the most tokens the model takes ([CLS] and [SEP] included).

    Returns:
        The ids, lengths and sentences.

    Raises:
        GradleakError: an empty sentence, or one longer than `max_length` tokens.
    """
    check_sentences(sentences)
    rows = [tokenizer(s, add_special_tokens=True)["input_ids"] for s in sentences]
    for i, row in enumerate(rows):
        if len(row) > max_length:
            raise GradleakError(
                f"text {i + 1} has {len(row)} tokens but the model takes at most {max_length}; "
                "shorten it or split it into several sentences"
            )
    length = max(len(r) for r in rows)
    pad = int(tokenizer.pad_token_id)
    ids = torch.full((len(rows), length), pad, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
    return EncodedText(ids, tuple(len(r) for r in rows), tuple(sentences))


def mask_for_mlm(
    ids: torch.Tensor, lengths: tuple[int, ...], mask_id: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked-language-modelling inputs and labels: 15% of each sentence's word positions
    (at least one; never [CLS], [SEP] or padding) replaced by [MASK].

    Args:
        ids: B×L token ids.
        lengths: each sentence's length ([CLS] and [SEP] included).
        mask_id: the [MASK] token's id.
        seed: draws the masked positions.

    Returns:
        (inputs, labels): the ids with [MASK] at the chosen positions, and B×L labels that
        hold the original token there and -100 (ignored by the loss) elsewhere.
    """
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = ids.clone(), torch.full_like(ids, -100)
    for row, length in enumerate(lengths):
        words = length - 2  # positions 1 .. length-2 hold the words' tokens
        if words < 1:
            continue
        count = max(1, round(MLM_MASK_RATE * words))
        chosen = 1 + torch.randperm(words, generator=generator)[:count]
        labels[row, chosen] = ids[row, chosen]
        inputs[row, chosen] = mask_id
    return inputs, labels


def restore_masked(inputs: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
    """The original ids of an MLM batch (masked positions back from the labels); other
    inputs (classification: 1-D labels) come back unchanged."""
    if labels is None or labels.dim() != 2 or labels.shape != inputs.shape:
        return inputs
    return torch.where(labels >= 0, labels, inputs)
