"""A text case: the server's language model and the attacker's knowledge, and the clients'
sentences as token ids (with their labels), built as two separate objects."""

from __future__ import annotations

import torch

from gradleak.core.batch import PrivateBatch
from gradleak.core.errors import GradleakError
from gradleak.core.knowledge import DataFacts, Grants, grant_knowledge
from gradleak.data.text import BUNDLED_SENTENCES, encode, mask_for_mlm, read_sentences
from gradleak.fl.protocols import ProtocolSettings
from gradleak.models import check_checkpoint_model, load_checkpoint
from gradleak.models.text import build_text_model, load_tokenizer
from gradleak.scenario.case import Case, ClientData, ServerView
from gradleak.scenario.plan import DataRequest, ModelRequest

DEFAULT_TEXT_CLASSES = 2


def text_case(
    data: DataRequest, model: ModelRequest, protocol: ProtocolSettings, grants: Grants
) -> Case:
    """Build a text case from the resolved parts of a run.

    Classification labels are the sentences' positions modulo the classes (0, 1, 0, …):
    the sentences carry none of their own. Masked-language modelling masks 15% of each
    sentence's words (`mask_for_mlm`, drawn from the model seed) and labels them with the
    original tokens.

    Args:
        data: the sentences (`texts`, or lines of `text_file` picked by `indices`), the task.
        model: the server's text model.
        protocol: what the clients do.
        grants: what the threat model grants (labels; each sequence's length).

    Returns:
        The server's view and the clients' data (token ids B×L and labels).

    Raises:
        GradleakError: the text extra missing, an unreadable or non-UTF-8 sentence file,
            too few sentences, an empty or too long sentence, a checkpoint of another model.
    """
    sentences, source = _sentences(data)
    tokenizer = load_tokenizer()
    num_classes = data.num_classes or DEFAULT_TEXT_CLASSES
    server_model = build_text_model(
        model.name, task=data.task, num_classes=num_classes, seed=model.seed
    )
    if model.checkpoint is not None:
        check_checkpoint_model(model.checkpoint, model.name)
        load_checkpoint(server_model, model.checkpoint)
    encoded = encode(sentences, tokenizer, server_model.max_length)
    if data.task == "mlm":
        vocabulary = server_model.vocabulary
        inputs, labels = mask_for_mlm(encoded.ids, encoded.lengths, vocabulary.mask_id, model.seed)
        classes, names = vocabulary.size, ()
    else:
        inputs = encoded.ids
        labels = torch.arange(len(sentences)) % num_classes
        classes, names = num_classes, tuple(str(i) for i in range(num_classes))
    shape = (int(inputs.shape[1]), server_model.hidden_size)
    facts = DataFacts(shape, classes, (), (), "text", "text")
    knowledge = grant_knowledge(facts, labels, protocol, grants, lengths=encoded.lengths)
    client = ClientData(PrivateBatch(inputs, labels), names, source)
    return Case(ServerView(server_model, knowledge), client)


def _sentences(data: DataRequest) -> tuple[list[str], str]:
    """The batch's sentences and where they come from, in words."""
    if data.texts:
        return list(data.texts), f"{len(data.texts)} sentence(s) given with --text"
    path = data.text_file or BUNDLED_SENTENCES
    lines = read_sentences(path)
    wanted = list(data.indices)
    if max(wanted) >= len(lines):
        raise GradleakError(
            f"sentence {max(wanted)} is past the {len(lines)} sentences of {path}; pick "
            f"--index below {len(lines)} or a smaller --batch-size"
        )
    name = "the bundled sentences" if data.text_file is None else str(path)
    span = f"{wanted[0]}" if len(wanted) == 1 else f"{wanted[0]}–{wanted[-1]}"
    return [lines[i] for i in wanted], f"sentence(s) {span} of {name}"
