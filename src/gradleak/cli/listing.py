"""The `gradleak list` command: the attacks, models, datasets and defenses there are."""

from __future__ import annotations

import argparse

from gradleak.attacks.matching.priors import PRIOR_KINDS
from gradleak.attacks.priors.generative import GENERATIVE_KINDS
from gradleak.attacks.registry import attack_modalities, spelled_attacks
from gradleak.cli import flags
from gradleak.cli.exits import EXIT_OK
from gradleak.defenses import available_defenses
from gradleak.models import available_models
from gradleak.models.text import TEXT_MODELS
from gradleak.scenario.config import DATASET_CHOICES


def add_list(commands: flags.Commands) -> None:
    """Register `gradleak list` on the subcommands of `gradleak`."""
    p = commands.add_parser("list")
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Print every attack, model, dataset and defense spelling.

    Args:
        args: the parsed flags of `gradleak list` (none).

    Returns:
        0.
    """
    for modality in ("image", "text"):
        print(f"{modality} attacks:")
        for name, text in spelled_attacks().items():
            if modality in (attack_modalities(name) or ()):
                print(f"  {name:9} {text}")
    print("image priors (--prior SPEC, repeatable; --group-consistency K[:W]):")
    for kind in PRIOR_KINDS.values():
        spec = f"{kind.name}:PATH" if kind.takes_path else f"{kind.name}[:W]"
        print(f"  {spec:14} {kind.description}")
    print("generative priors (gradleak train-prior --kind):")
    for kind, text in GENERATIVE_KINDS.items():
        print(f"  {kind:14} {text}")
    print(f"image models: {', '.join(available_models())}")
    print("  your own: MODULE:FACTORY or FILE.py:FACTORY, a callable returning an nn.Module")
    print("  (its keyword arguments: --model-arg KEY=VALUE)")
    print("text models (--modality text; pip install 'gradleak[text]'):")
    for name, (_, text) in TEXT_MODELS.items():
        print(f"  {name:9} {text}")
    print(f"datasets: {', '.join(DATASET_CHOICES)}")
    print("defenses:")
    for spelling in available_defenses():
        print(f"  {spelling}")
    return EXIT_OK
