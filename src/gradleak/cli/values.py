"""argparse value types: the text of a flag turned into the value a command uses."""

from __future__ import annotations

import argparse
from dataclasses import dataclass


@dataclass(frozen=True)
class IntList:
    """'A,B,C' → (A, B, C): an argparse type for a comma-separated list of integers.

    Attributes:
        noun: what the integers are, as the message for text that is not a list names them.
        example: a valid list, shown in every message.
        invalid: the message for an empty list or a value below `minimum`; `{text}` is the
            quoted text and `{example}` the example.
        minimum: the smallest value accepted (None: any, left to the command's own checks).
        sort_unique: sort the values and drop repeats (else keep them as given).
    """

    noun: str
    example: str
    invalid: str
    minimum: int | None = None
    sort_unique: bool = False

    def __call__(self, text: str) -> tuple[int, ...]:
        """Parse `text`.

        Args:
            text: the flag's argument, e.g. '1, 10,30'; empty parts are ignored.

        Returns:
            The integers, sorted and unique where `sort_unique`, else in the order given.

        Raises:
            argparse.ArgumentTypeError: a part is not an integer, no integer is given, or one
                is below `minimum` (argparse turns it into a one-line usage error).
        """
        try:
            values = [int(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list of {self.noun}, e.g. {self.example}"
            ) from None
        if self.sort_unique:
            values = sorted(set(values))
        if not values or (self.minimum is not None and min(values) < self.minimum):
            raise argparse.ArgumentTypeError(
                self.invalid.format(text=repr(text), example=self.example)
            )
        return tuple(values)


def prior_spec(text: str) -> str:
    """'bn:0.01' → 'bn:0.01': a `--prior` value, checked as the attack will parse it.

    Raises:
        argparse.ArgumentTypeError: an unknown prior, a bad weight or a missing file name
            (the message lists the choices).
    """
    from gradleak.attacks.matching.priors import parse_prior
    from gradleak.core.errors import GradleakError

    try:
        parse_prior(text)
    except GradleakError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


def group_consistency(text: str) -> tuple[int, float | None]:
    """'8:0.01' → (8, 0.01), '8' → (8, None): the seeds of one group and the pull's weight.

    Raises:
        argparse.ArgumentTypeError: the count is not an integer >= 2 or the weight not a
            positive number.
    """
    count, _, weight = text.partition(":")
    try:
        seeds = int(count)
        pull = float(weight) if weight else None
    except ValueError:
        seeds, pull = 0, None
        weight = weight or "x"
    if seeds < 2 or (weight and not (pull is not None and pull > 0 and pull < float("inf"))):
        raise argparse.ArgumentTypeError(
            f"--group-consistency {text!r}: give the seeds K >= 2 and optionally a weight W > 0, "
            "as K or K:W (e.g. 4:0.01)"
        )
    return seeds, pull


class ModelArgs(argparse.Action):
    """Repeated `--model-arg KEY=VALUE` → {KEY: VALUE}: a factory's keyword arguments.

    Each value is read as a YAML scalar (`models.user.parse_model_arg`); bad syntax or a
    key given twice is a one-line usage error.
    """

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option_string: str | None = None,
    ) -> None:
        from gradleak.core.errors import GradleakError
        from gradleak.models.user import model_args_from, parse_model_arg

        earlier = dict(getattr(namespace, self.dest, None) or {})
        try:
            pair = parse_model_arg(str(values))
            setattr(namespace, self.dest, model_args_from([*earlier.items(), pair]))
        except GradleakError as error:
            parser.error(str(error))


def compile_setting(text: str) -> bool | str:
    """'on' → True, 'off' → False, 'auto' → 'auto': an argparse type for --compile, giving
    the values a config file spells `compile: true | false | auto`.

    Raises:
        argparse.ArgumentTypeError: any other text (argparse turns it into a one-line usage
            error).
    """
    settings: dict[str, bool | str] = {"on": True, "off": False, "auto": "auto"}
    key = text.strip().lower()
    if key not in settings:
        raise argparse.ArgumentTypeError(
            f"--compile {text!r} is not one of: {', '.join(settings)} (--compile alone: on)"
        )
    return settings[key]
