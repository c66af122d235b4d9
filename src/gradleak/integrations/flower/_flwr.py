"""The one place that imports Flower, so that a missing extra is one clear line."""

from __future__ import annotations

from types import ModuleType

from gradleak.core.errors import GradleakError

INSTALL = "install it with: pip install 'gradleak[flower]'"


def flwr_app() -> ModuleType:
    """`flwr.app` (messages, records, context).

    Raises:
        GradleakError: Flower is not installed.
    """
    try:
        import flwr.app
    except ImportError as exc:
        raise GradleakError(f"the Flower integration needs Flower; {INSTALL}") from exc
    return flwr.app


def strategy_base() -> type:
    """Flower's server strategy base class (the Message API's `flwr.serverapp.strategy`).

    Raises:
        GradleakError: Flower is not installed, or too old to have the Message API.
    """
    flwr_app()
    try:
        from flwr.serverapp.strategy import Strategy
    except ImportError as exc:
        raise GradleakError(
            f"this Flower has no Message API strategies (flwr.serverapp.strategy); {INSTALL}"
        ) from exc
    return Strategy
