"""Text attacks on MiniLM: tokens, span, dlg-text and tag over the bundled sentences.

Studies (each row: one batch of consecutive bundled sentences, one attack):

  main       batch sizes 1, 2, 4, 8; classification and masked-language modelling; FedSGD.
             tokens and span attack all 40 sentences; dlg-text and tag the first
             --matching-sentences (default 4; one batch of 8 at batch size 8), because
             each of their batches takes minutes on MiniLM.
  defenses   batch size 2, classification, under Gaussian noise (variance 1e-6 and 1e-4),
             90% pruning and DP-SGD (clip 1, σ 0.5): tokens and span on the first 8
             sentences, dlg-text and tag on the first 2.
  fedavg     batch size 2, classification and MLM, all 40 sentences, FedAvg with 2 and 5
             local steps (η 0.01): span and tokens.

Rows are appended to bench/text-attacks/rows.jsonl as they finish (a re-run skips the rows
already there), and the tables of docs/RESULTS.md are printed from them (means over
batches of the scores of `gradleak.metrics.text`; seconds per batch is the attack's own
time). Run from the repository root:
  OMP_NUM_THREADS=2 .venv/bin/python benchmarks/text_attacks.py [--study main] [--tables]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gradleak.core.errors import GradleakError
from gradleak.scenario.config import RunConfig
from gradleak.scenario.run import attack_case

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "text-attacks"
SENTENCES = 40
ATTACKS = ("tokens", "span", "dlg-text", "tag")
CLOSED_FORM = ("tokens", "span")
SCORES = (
    "token_recall",
    "token_precision",
    "token_accuracy",
    "exact_match",
    "rouge1",
    "rouge2",
    "rougeL",
)
DEFENSES = {
    "none": (),
    "noise 1e-6": ("noise:gaussian:1e-6",),
    "noise 1e-4": ("noise:gaussian:1e-4",),
    "prune 90%": ("prune:0.9",),
    "dpsgd 1/0.5": ("dpsgd:1.0:0.5",),
}


def _batches(batch: int, sentences: int) -> range:
    return range(0, sentences - sentences % batch, batch)


def main_cases(matching_sentences: int) -> Iterator[dict[str, Any]]:
    for task in ("classification", "mlm"):
        for batch in (1, 2, 4, 8):
            for attack in ATTACKS:
                count = SENTENCES if attack in CLOSED_FORM else max(batch, matching_sentences)
                for start in _batches(batch, count):
                    yield {
                        "study": "main",
                        "task": task,
                        "batch": batch,
                        "attack": attack,
                        "start": start,
                        "defense": "none",
                        "protocol": "fedsgd",
                    }


def defense_cases() -> Iterator[dict[str, Any]]:
    for defense in DEFENSES:
        for attack in ATTACKS:
            for start in _batches(2, 8 if attack in CLOSED_FORM else 2):
                yield {
                    "study": "defenses",
                    "task": "classification",
                    "batch": 2,
                    "attack": attack,
                    "start": start,
                    "defense": defense,
                    "protocol": "fedsgd",
                }


def fedavg_cases() -> Iterator[dict[str, Any]]:
    for task in ("classification", "mlm"):
        for steps in (2, 5):
            for attack in CLOSED_FORM:
                for start in _batches(2, SENTENCES):
                    yield {
                        "study": "fedavg",
                        "task": task,
                        "batch": 2,
                        "attack": attack,
                        "start": start,
                        "defense": "none",
                        "protocol": f"fedavg-{steps}",
                    }


def _key(case: dict[str, Any]) -> str:
    return json.dumps(case, sort_keys=True)


def run_case(case: dict[str, Any]) -> dict[str, Any]:
    """One attacked batch: the case's settings, its scores and the attack's seconds."""
    local = {}
    if case["protocol"].startswith("fedavg"):
        local = {"protocol": "fedavg", "local_steps": int(case["protocol"].split("-")[1])}
    config = RunConfig(
        modality="text",
        model="minilm",
        attack=case["attack"],
        task=case["task"],
        batch_size=case["batch"],
        indices=(case["start"],),
        defenses=DEFENSES[case["defense"]],
        progress=False,
        **local,
    ).validate()
    started = time.perf_counter()
    try:
        outcome = attack_case(config)
    except GradleakError as exc:  # a refusal (e.g. span's rank condition) is a result too
        zeros = dict.fromkeys(SCORES, 0.0)
        return {**case, **zeros, "seconds": 0.0, "wall_seconds": 0.0, "status": f"refused: {exc}"}
    scores = outcome.evaluation.to_dict()
    return {
        **case,
        **{k: scores[k] for k in SCORES},
        "seconds": outcome.reconstruction.seconds,
        "wall_seconds": time.perf_counter() - started,
        "status": outcome.reconstruction.status.value,
    }


def tables(rows: list[dict[str, Any]]) -> str:
    """Markdown tables: one per study, one row per setting, means over batches."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        setting = (row["study"], row["task"], row["protocol"], row["defense"], row["batch"])
        groups[(*setting, row["attack"])].append(row)
    head = "| study | task | protocol | defense | B | attack | batches | " + " | ".join(
        ["recall", "precision", "token acc.", "exact", "R-1", "R-2", "R-L", "s / batch"]
    )
    lines = [head + " |", "|" + "---|" * 16]
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3], k[4], ATTACKS.index(k[5]))):
        items = groups[key]
        means = [statistics.fmean(r[s] for r in items) for s in SCORES]
        seconds = statistics.median(r["seconds"] for r in items)
        cells = [*map(str, key), str(len(items)), *(f"{m:.2f}" for m in means), f"{seconds:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", choices=("main", "defenses", "fedavg"), action="append")
    parser.add_argument("--attack", choices=ATTACKS, action="append")
    parser.add_argument("--matching-sentences", type=int, default=4)
    parser.add_argument("--tables", action="store_true", help="only print the tables")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "rows.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    if not args.tables:
        done = {_key({k: r[k] for k in _CASE_KEYS}) for r in rows}
        studies = args.study or ["main", "defenses", "fedavg"]
        makers = {
            "main": lambda: main_cases(args.matching_sentences),
            "defenses": defense_cases,
            "fedavg": fedavg_cases,
        }
        for study in studies:
            for case in makers[study]():
                if args.attack and case["attack"] not in args.attack or _key(case) in done:
                    continue
                row = run_case(case)
                rows.append(row)
                with path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(row) + "\n")
                print(
                    f"{study} {case['task']} B={case['batch']} {case['attack']} "
                    f"{case['defense']} {case['protocol']} @{case['start']}: exact "
                    f"{row['exact_match']:.2f} acc {row['token_accuracy']:.2f} "
                    f"{row['seconds']:.1f} s",
                    flush=True,
                )
    print(tables(rows))
    return 0


_CASE_KEYS = ("study", "task", "batch", "attack", "start", "defense", "protocol")

if __name__ == "__main__":
    sys.exit(main())
