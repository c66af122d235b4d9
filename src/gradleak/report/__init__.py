"""Report outputs: image strips, truth-versus-reconstruction grids, history CSV."""

from gradleak.report.history import write_history_csv
from gradleak.report.images import save_comparison_grid, save_image_strip, to_pil

__all__ = ["save_comparison_grid", "save_image_strip", "to_pil", "write_history_csv"]
