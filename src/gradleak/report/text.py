"""Recovered sentences beside the true ones: a plain-text file and a token-level diff in HTML.

The diff marks each true token as right (same token at the same position), moved (recovered
but elsewhere) or missing, and each recovered token that is not in the truth as extra; see
`token_diff` for the exact rule.
"""

from __future__ import annotations

import html
from pathlib import Path

from gradleak.core.errors import GradleakError
from gradleak.core.files import write_atomically

RIGHT, MOVED, MISSING, EXTRA = "right", "moved", "missing", "extra"

TEXT_DIFF_CSS: str = """\
.text-diff { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  line-height: 1.8; margin: 0.5em 0 1em; }
.text-diff p { margin: 0.2em 0; }
.text-diff-label { display: inline-block; width: 6.5em; color: #555; }
.text-diff-empty { color: #999; font-style: italic; }
.tok-right { background: #d4f4d2; color: #14532d; }
.tok-moved { background: #fde8b0; color: #7c4a03; }
.tok-missing { background: #fbd5d5; color: #991b1b; text-decoration: line-through; }
.tok-extra { background: #e5e5e5; color: #525252; }
.tok-right, .tok-moved, .tok-missing, .tok-extra { padding: 0 0.15em; border-radius: 3px; }
"""
"""Styles of `text_diff_html`: green right, amber moved, red struck-out missing, grey extra."""


def _one_line(sentence: str) -> str:
    # A line break inside a sentence would split its block in sentences.txt.
    return " ".join(sentence.split())


def write_sentences(path: Path, truth: list[str], recovered: list[str]) -> None:
    """Write each true sentence above the recovered sentence matched to it (UTF-8).

    One block per pair: a line `original:  <true sentence>`, a line
    `recovered: <recovered sentence>`, then a blank line. Whitespace inside a sentence
    (line breaks included) is collapsed to single spaces.

    Args:
        path: the file to write, usually `<run>/sentences.txt`; replaced whole.
        truth: the true sentences, in order.
        recovered: the recovered sentence matched to each true one, in the same order.

    Raises:
        GradleakError: when the two lists differ in length.
    """
    if len(truth) != len(recovered):
        raise GradleakError(
            f"got {len(recovered)} recovered sentences for {len(truth)} true ones; "
            "pass the recovered sentence matched to each true one"
        )
    blocks = [
        f"original:  {_one_line(t)}\nrecovered: {_one_line(r)}\n\n"
        for t, r in zip(truth, recovered, strict=True)
    ]
    write_atomically(Path(path), "".join(blocks))


def _statuses(truth_tokens: list[str], recovered_tokens: list[str]) -> tuple[list[str], list[str]]:
    """Status of each true token and of each recovered token (right, moved or extra)."""
    truth_status = [MISSING] * len(truth_tokens)
    recovered_status = [EXTRA] * len(recovered_tokens)
    for i, (t, r) in enumerate(zip(truth_tokens, recovered_tokens, strict=False)):
        if t == r:
            truth_status[i] = recovered_status[i] = RIGHT
    # Recovered tokens not already right at their place, by token, first occurrence first.
    unused: dict[str, list[int]] = {}
    for j, r in enumerate(recovered_tokens):
        if recovered_status[j] == EXTRA:
            unused.setdefault(r, []).append(j)
    for i, t in enumerate(truth_tokens):
        if truth_status[i] == MISSING and unused.get(t):
            truth_status[i] = MOVED
            recovered_status[unused[t].pop(0)] = MOVED
    return truth_status, recovered_status


def token_diff(truth_tokens: list[str], recovered_tokens: list[str]) -> list[tuple[str, str]]:
    """Mark each true token as right, moved or missing, and each unaccounted recovered token
    as extra.

    The rule, with tokens counted as a multiset (each recovered token accounts for at most
    one true token):

    1. True token i is "right" when recovered token i is the same token.
    2. Going through the remaining true tokens left to right, a token is "moved" when a
       copy of it is left among the recovered tokens not yet accounted for (the first such
       copy is then used up), and "missing" otherwise.
    3. The recovered tokens accounted for by neither step are "extra".

    Args:
        truth_tokens: the true sentence as tokens, in order.
        recovered_tokens: the recovered sentence as tokens, in order.

    Returns:
        (token, status) for every true token in order, then (token, "extra") for each
        extra recovered token in recovered order.
    """
    truth_status, recovered_status = _statuses(truth_tokens, recovered_tokens)
    marked = list(zip(truth_tokens, truth_status, strict=True))
    extras = [
        (r, EXTRA) for r, s in zip(recovered_tokens, recovered_status, strict=True) if s == EXTRA
    ]
    return marked + extras


def _line(label: str, spans: list[str]) -> str:
    body = " ".join(spans) if spans else '<span class="text-diff-empty">(empty)</span>'
    return f'<p><span class="text-diff-label">{label}</span> {body}</p>'


def text_diff_html(truth_tokens: list[str], recovered_tokens: list[str]) -> str:
    """An HTML fragment: the true sentence with each token's status above the recovered one.

    True tokens are wrapped in `<span class="tok-right|tok-moved|tok-missing">`; in the
    recovered sentence below, extra tokens (see `token_diff`) are wrapped in
    `<span class="tok-extra">` and the others are plain. Every token is escaped with
    `html.escape`; style it with `TEXT_DIFF_CSS`.

    Args:
        truth_tokens: the true sentence as tokens, in order.
        recovered_tokens: the recovered sentence as tokens, in order.

    Returns:
        A `<div class="text-diff">` element holding two paragraphs.
    """
    truth_status, recovered_status = _statuses(truth_tokens, recovered_tokens)
    original = [
        f'<span class="tok-{s}">{html.escape(t)}</span>'
        for t, s in zip(truth_tokens, truth_status, strict=True)
    ]
    recovered = [
        f'<span class="tok-extra">{html.escape(r)}</span>' if s == EXTRA else html.escape(r)
        for r, s in zip(recovered_tokens, recovered_status, strict=True)
    ]
    return (
        '<div class="text-diff">\n'
        f"{_line('original', original)}\n"
        f"{_line('recovered', recovered)}\n"
        "</div>\n"
    )
