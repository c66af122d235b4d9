"""iDLG's analytic label on many single-image updates: how often is it the true label?

Example (2 CPU cores, seconds):
  python benchmarks/idlg_labels.py --dataset cifar100 --model lenet --count 100
"""

from __future__ import annotations

import argparse
import json

from selection import add_selection_arguments

from gradleak.attacks.labels import idlg_label
from gradleak.fl import FedSGDClient
from gradleak.scenario import RunConfig, build_case


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_selection_arguments(p)
    args = p.parse_args()

    wrong = []
    for index in range(args.start, args.start + args.count):
        config = RunConfig(
            model=args.model,
            dataset=args.dataset,
            data_root=args.data_root,
            indices=(index,),
            seed=args.seed,
        )
        case = build_case(config)
        update = FedSGDClient(case.server.model).compute_update(case.client.batch)
        recovered = int(idlg_label(update, case.server.model))
        if recovered != int(case.client.batch.labels[0]):
            wrong.append(
                {"index": index, "true": int(case.client.batch.labels[0]), "got": recovered}
            )
    summary = {
        "model": args.model,
        "dataset": args.dataset,
        "images": args.count,
        "correct": args.count - len(wrong),
        "wrong": wrong,
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
