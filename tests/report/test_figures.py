"""Report figures: moving average by hand, loss curves from trainer logs, label parsing."""

from __future__ import annotations

import json

import numpy as np
import pytest

from omnishift.cli import main
from omnishift.report.commands import parse_labelled
from omnishift.report.figures import plot_loss_curves, read_train_log, smooth


def test_smooth_is_a_trailing_mean():
    v = np.array([4.0, 2.0, 6.0, 0.0, 8.0])
    # window 3: [4, (4+2)/2, (4+2+6)/3, (2+6+0)/3, (6+0+8)/3]
    np.testing.assert_allclose(smooth(v, 3), [4.0, 3.0, 4.0, 8 / 3, 14 / 3])
    np.testing.assert_array_equal(smooth(v, 1), v)


def _fake_run(path, losses):
    path.mkdir()
    (path / "log.jsonl").write_text("".join(json.dumps({"step": i + 1, "loss": x}) + "\n" for i, x in enumerate(losses)))
    return path


def test_loss_curves_png(tmp_path):
    a = _fake_run(tmp_path / "full", [3.0, 2.5, 2.0, 1.8])
    b = _fake_run(tmp_path / "lora", [3.0, 2.9, 2.7, 2.6])
    assert [r["loss"] for r in read_train_log(a)] == [3.0, 2.5, 2.0, 1.8]
    out = plot_loss_curves({"full": a, "lora": b}, tmp_path / "fig" / "loss.png", window=2)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.parent.glob(".*tmp*"))  # atomic: no temp file left behind


def test_cli_plot_loss_and_missing_log(tmp_path, capsys):
    a = _fake_run(tmp_path / "full", [1.0, 0.5])
    assert main(["plot-loss", str(a), "--out", str(tmp_path / "l.png")]) == 0
    assert (tmp_path / "l.png").is_file()
    assert main(["plot-loss", f"x={tmp_path}", "--out", str(tmp_path / "m.png")]) == 2
    assert "no log.jsonl" in capsys.readouterr().err


def test_parse_labelled():
    assert parse_labelled(["a=runs/x", "runs/b/"]) == {"a": "runs/x", "b": "runs/b/"}
    with pytest.raises(ValueError, match="given twice"):
        parse_labelled(["runs/a", "other/a"])
