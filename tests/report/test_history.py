import csv

from gradleak.report import write_history_csv


def test_history_round_trip_with_missing_and_none_cells(tmp_path):
    rows = [
        {"iteration": 0, "loss": 1.5, "psnr": None},
        {"iteration": 10, "loss": 0.1 + 0.2, "psnr": 12.25, "tv": 3},
        {"iteration": 20, "psnr": 18.0},
    ]
    path = tmp_path / "run" / "history.csv"
    write_history_csv(rows, path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == ["iteration", "loss", "psnr", "tv"]
        back = list(reader)
    assert back[0] == {"iteration": "0", "loss": "1.5", "psnr": "", "tv": ""}
    assert back[1]["psnr"] == "12.25"
    assert float(back[1]["loss"]) == 0.1 + 0.2  # full precision survives
    assert back[2] == {"iteration": "20", "loss": "", "psnr": "18.0", "tv": ""}


def test_empty_history_writes_an_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    write_history_csv([], path)
    assert path.read_bytes() == b""
