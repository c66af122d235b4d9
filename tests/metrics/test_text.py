import json
import sys

import pytest
import torch

from gradleak.core.errors import GradleakError
from gradleak.metrics.text import (
    CLS_ID,
    NO_MATCH,
    PAD_ID,
    SEP_ID,
    TEXT_CONVENTION,
    UNK_ID,
    TextEvaluation,
    content_ids,
    evaluate_text,
    exact_match_rate,
    match_sequences,
    rouge_scores,
    token_accuracy,
    token_set_scores,
)

pytest.importorskip("rouge_score")

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"]
ID = {w: 2000 + k for k, w in enumerate(WORDS)}
WORD = {i: w for w, i in ID.items()}
LAYOUT = {PAD_ID, CLS_ID, SEP_ID}


def decode(ids: torch.Tensor) -> list[str]:
    """A stand-in for a tokenizer's decode: one word per id, layout ids skipped."""
    return [" ".join(WORD.get(t, f"w{t}") for t in row if t not in LAYOUT) for row in ids.tolist()]


def batch(*sentences: str, length: int | None = None) -> torch.Tensor:
    """[CLS] words [SEP] padded with 0, one row per sentence."""
    rows = [[CLS_ID, *(ID[w] for w in s.split()), SEP_ID] for s in sentences]
    width = length or max(len(r) for r in rows)
    return torch.tensor([r + [PAD_ID] * (width - len(r)) for r in rows], dtype=torch.int64)


def test_shorter_recovery_scores_by_hand():
    # truth "the cat sat", recovered "the cat": 2 of 3 tokens, all recovered ones right.
    result = evaluate_text(batch("the cat", length=7), batch("the cat sat"), decode)
    assert isinstance(result, TextEvaluation)
    assert result.token_precision == 1.0
    assert result.token_recall == pytest.approx(2 / 3)
    assert result.token_accuracy == pytest.approx(2 / 3)
    assert result.exact_match == 0.0
    # ROUGE-1: P 1, R 2/3 -> F 0.8; ROUGE-2: bigrams {the cat} vs {the cat, cat sat} -> P 1,
    # R 1/2, F 2/3; ROUGE-L: LCS 2 -> F 0.8.
    assert result.rouge1 == pytest.approx(0.8)
    assert result.rouge2 == pytest.approx(2 / 3)
    assert result.rougeL == pytest.approx(0.8)
    assert result.label_accuracy is None
    assert result.matching == [0]
    (row,) = result.per_sequence
    assert row["truth"] == "the cat sat" and row["recovered"] == "the cat"
    assert row["token_accuracy"] == pytest.approx(2 / 3) and row["exact"] is False


def test_rouge_scores_by_hand():
    # unigrams: 5 of 5 recovered in 6 true -> F 10/11; bigrams: {the cat, on the, the mat}
    # shared, 4 recovered, 5 true -> P 3/4, R 3/5, F 2/3; LCS "the cat on the mat" -> 10/11.
    (scores,) = rouge_scores(["the cat on the mat"], ["the cat sat on the mat"])
    assert scores["rouge1"] == pytest.approx(10 / 11)
    assert scores["rouge2"] == pytest.approx(2 / 3)
    assert scores["rougeL"] == pytest.approx(10 / 11)
    # Word order matters to ROUGE-2 and ROUGE-L only.
    (swapped,) = rouge_scores(["sat cat the"], ["the cat sat"])
    assert swapped["rouge1"] == pytest.approx(1.0)
    assert swapped["rouge2"] == 0.0
    assert swapped["rougeL"] == pytest.approx(1 / 3)
    assert rouge_scores([""], ["the cat"]) == [{"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0}]


def test_positions_are_counted_within_the_content():
    truth = batch("the cat sat on the mat")
    recon = batch("the cat on the mat", length=12)
    assert token_accuracy(recon, truth) == pytest.approx(2 / 6)  # the, cat; then shifted
    # Padding, [CLS] and [SEP] anywhere in a recovered row are dropped before comparing.
    scattered = torch.tensor([[PAD_ID, ID["the"], CLS_ID, ID["cat"], PAD_ID, ID["sat"], SEP_ID]])
    assert content_ids(scattered) == [[ID["the"], ID["cat"], ID["sat"]]]
    assert token_accuracy(scattered, batch("the cat sat")) == 1.0
    assert exact_match_rate(scattered, batch("the cat sat")) == 1.0


def test_unknown_and_mask_ids_are_scored_as_tokens():
    truth = batch("the cat sat")
    recon = truth.clone()
    recon[0, 2] = UNK_ID  # "cat" recovered as [UNK]
    precision, recall = token_set_scores(recon, truth)
    assert (precision, recall) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert token_accuracy(recon, truth) == pytest.approx(2 / 3)


def test_token_sets_count_repeated_tokens_once_per_occurrence():
    # recovered {the: 3, dog: 1} against true {the: 2, cat: 1}: overlap 2.
    precision, recall = token_set_scores(batch("the dog the the"), batch("the the cat"))
    assert precision == pytest.approx(2 / 4)
    assert recall == pytest.approx(2 / 3)
    # Order and rows do not matter: the batch is one multiset.
    precision, recall = token_set_scores(batch("mat", "sat the"), batch("the mat sat"))
    assert (precision, recall) == (1.0, 1.0)
    assert token_set_scores(torch.zeros(0, 4, dtype=torch.int64), batch("the")) == (0.0, 0.0)


def test_matching_undoes_a_permutation():
    truth = batch("the cat sat on the mat", "a dog ran", "the dog sat on a cat")
    perm = [2, 0, 1]
    result = evaluate_text(truth[perm], truth, decode)
    # recon[j] = truth[perm[j]], so truth i is recon perm.index(i).
    assert result.matching == [1, 2, 0]
    assert [row["matched_reconstruction"] for row in result.per_sequence] == [1, 2, 0]
    assert result.token_accuracy == 1.0 and result.exact_match == 1.0
    assert (result.rouge1, result.rouge2, result.rougeL) == (1.0, 1.0, 1.0)
    assert (result.token_precision, result.token_recall) == (1.0, 1.0)
    # In the given order: row 0 keeps the, sat, on of truth 0; row 1 nothing; row 2 "dog".
    assert token_accuracy(truth[perm], truth) == pytest.approx(4 / 15)
    assert exact_match_rate(truth[perm], truth) == 0.0


def test_matching_maximises_the_total_rouge_l():
    # ROUGE-L F: "the cat sat on" vs "the cat sat" 6/7, vs "the cat" 2/3; "the cat sat" vs
    # "the cat sat" 1, vs "the cat" 4/5. Best total: 2/3 + 1 > 6/7 + 4/5, although
    # "the cat sat" is the closest recovered sentence to the first truth.
    matching = match_sequences(["the cat sat", "the cat"], ["the cat sat on", "the cat sat"])
    assert matching == [1, 0]


def test_exact_match_needs_the_same_ids_and_length():
    truth = batch("the cat sat", "a dog ran")
    recon = batch("the cat sat", "a dog ran ran")
    assert exact_match_rate(recon, truth) == 0.5
    assert evaluate_text(recon, truth, decode).exact_match == 0.5
    assert exact_match_rate(batch("the cat sat", "a dog ran", length=9), truth) == 1.0


def test_labels_follow_their_sequences():
    truth = batch("the cat sat", "a dog ran", "on the mat")
    true_labels = torch.tensor([0, 1, 2])
    perm = [2, 0, 1]
    result = evaluate_text(truth[perm], truth, decode, true_labels[perm], true_labels)
    assert result.label_accuracy == 1.0
    wrong_one = true_labels[perm].clone()
    wrong_one[0] = 0  # the label of recovered row 0, matched to truth 2
    result = evaluate_text(truth[perm], truth, decode, wrong_one, true_labels)
    assert result.label_accuracy == pytest.approx(2 / 3)
    assert evaluate_text(truth, truth, decode, true_labels).label_accuracy is None


def test_fewer_recovered_sequences_count_as_empty():
    truth = batch("the cat sat", "a dog ran")
    result = evaluate_text(
        batch("a dog ran"), truth, decode, torch.tensor([1]), torch.tensor([0, 1])
    )
    assert result.matching == [NO_MATCH, 0]
    assert result.per_sequence[0]["recovered"] == ""
    assert result.per_sequence[0]["token_accuracy"] == 0.0
    assert result.token_accuracy == pytest.approx(3 / 6)
    assert result.exact_match == 0.5
    assert result.rouge1 == pytest.approx(0.5)
    assert result.token_precision == 1.0 and result.token_recall == pytest.approx(0.5)
    assert result.label_accuracy == 0.5
    empty = evaluate_text(torch.zeros(0, 5, dtype=torch.int64), truth, decode)
    assert empty.matching == [NO_MATCH, NO_MATCH]
    assert empty.token_accuracy == 0.0 and empty.token_precision == 0.0


def test_extra_recovered_sequences_lower_precision_only():
    truth = batch("the cat sat")
    result = evaluate_text(batch("a dog", "the cat sat"), truth, decode)
    assert result.matching == [1]
    assert result.token_accuracy == 1.0 and result.exact_match == 1.0
    assert result.token_precision == pytest.approx(3 / 5)
    assert result.token_recall == 1.0


def test_to_dict_is_plain_json():
    truth = batch("the cat sat", "a dog ran")
    result = evaluate_text(
        batch("a dog ran", "the mat"), truth, decode, torch.tensor([1, 0]), torch.tensor([0, 1])
    )
    data = json.loads(json.dumps(result.to_dict()))
    assert data["matching"] == [1, 0]
    assert data["label_accuracy"] == 1.0
    assert set(data) == {
        "token_precision", "token_recall", "token_accuracy", "exact_match", "rouge1",
        "rouge2", "rougeL", "label_accuracy", "per_sequence", "matching",
    }  # fmt: skip
    assert set(data["per_sequence"][0]) == {
        "index", "matched_reconstruction", "truth", "recovered", "token_accuracy", "exact",
        "rouge1", "rouge2", "rougeL",
    }  # fmt: skip
    assert data["per_sequence"][1]["recovered"] == "a dog ran"


def test_convention_describes_the_scoring():
    for phrase in ("Hungarian", "ROUGE-L", "[CLS]", "multiset", "empty"):
        assert phrase in TEXT_CONVENTION


@pytest.mark.parametrize(
    ("recon", "truth", "message"),
    [
        (torch.rand(1, 3), batch("the"), "integer token ids"),
        (batch("the")[0], batch("the"), "B×L"),
        ([[101, 102]], batch("the"), "torch.Tensor"),
        (batch("the"), torch.tensor([[CLS_ID, SEP_ID, PAD_ID]]), "no token besides"),
        (batch("the"), torch.zeros(0, 3, dtype=torch.int64), "no sequence"),
    ],
)
def test_bad_token_tensors_are_refused(recon, truth, message):
    with pytest.raises(GradleakError, match=message):
        evaluate_text(recon, truth, decode)


def test_bad_labels_and_decode_are_refused():
    truth = batch("the cat", "a dog")
    with pytest.raises(GradleakError, match="one recovered label per recovered sequence"):
        evaluate_text(truth, truth, decode, torch.tensor([0]), torch.tensor([0, 1]))
    with pytest.raises(GradleakError, match="one true label per sequence"):
        evaluate_text(truth, truth, decode, torch.tensor([0, 1]), torch.tensor([0]))
    with pytest.raises(GradleakError, match="integer class indices"):
        evaluate_text(truth, truth, decode, torch.tensor([0.0, 1.0]), torch.tensor([0, 1]))
    with pytest.raises(GradleakError, match="one string per row"):
        evaluate_text(truth, truth, lambda ids: ["only one"])
    with pytest.raises(GradleakError, match="in pairs"):
        rouge_scores(["a"], ["a", "b"])


def test_missing_rouge_score_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "rouge_score", None)  # makes the import fail
    with pytest.raises(GradleakError, match=r"pip install 'gradleak\[text\]'"):
        rouge_scores(["the cat"], ["the cat"])
    # Token scores need no ROUGE.
    assert token_accuracy(batch("the cat"), batch("the cat")) == 1.0
