"""gradleak inside a Flower app (`pip install 'gradleak[flower]'`; Flower 1.41 and 1.42).

- `CuriousStrategy` wraps any server strategy of Flower's Message API: it records each
  client's update in every round with the round's global model, attacks the chosen ones
  (during the run or afterwards) and writes flower-summary.csv and flower-summary.html.
- `LeakageGuard` is a client mod: before a training reply leaves the client it attacks the
  client's own update and, above a threshold, replaces it by a defended one.
- `attack_capture_folder` attacks a capture folder's updates after the run.
"""

from gradleak.integrations.flower.afterwards import attack_capture_folder
from gradleak.integrations.flower.capture import Captured, CaptureFolder
from gradleak.integrations.flower.guard import LeakageGuard
from gradleak.integrations.flower.strategy import CuriousStrategy
from gradleak.integrations.flower.target import FlowerTarget
from gradleak.integrations.flower.truth import TruthFolder
from gradleak.integrations.flower.worker import AttackPlan

__all__ = [
    "AttackPlan",
    "CaptureFolder",
    "Captured",
    "CuriousStrategy",
    "FlowerTarget",
    "LeakageGuard",
    "TruthFolder",
    "attack_capture_folder",
]
