"""End-to-end experiment script runs (slow: excluded from the default test run)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))


@pytest.mark.slow
def test_saf_experiments_tiny_end_to_end(tmp_path):
    import saf_experiments

    saf_experiments.main(
        [
            "--workdir",
            str(tmp_path),
            "--scale",
            "tiny",
            "--seeds",
            "1",
            "--epochs",
            "3",
            "--variants",
            "SAF,w/o SL",
            "--saliency",
        ]
    )
    rows = json.loads((tmp_path / "results.json").read_text())
    assert [r["variant"] for r in rows] == ["SAF", "w/o SL"]
    assert all(r["test_mean_auc"][0] > 0.55 for r in rows)  # learns beyond chance
    sal = json.loads((tmp_path / "saliency.json").read_text())
    assert 0 < sal["SAF"]["click"]["spurious_share"] < 1
    assert (tmp_path / "saliency.png").is_file() and (tmp_path / "results.md").is_file()


@pytest.mark.slow
def test_saf_experiments_paper_scale(tmp_path):
    """The full synthetic table: 10 variants x 5 seeds at the paper's settings (hours on CPU)."""
    import saf_experiments

    saf_experiments.main(
        ["--workdir", str(tmp_path), "--scale", "full", "--seeds", "5", "--saliency"]
    )
    assert (tmp_path / "results.md").is_file()
