"""Spectrum tables and figures from hand-made analysis results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from nasdet.report.plotting import plt
from nasdet.report.spectrum_report import (
    eigenspectra_figure,
    format_spectrum_table,
    id_bars_figure,
    id_dynamics_figure,
    plot_id_dynamics,
    write_spectrum_report,
)
from nasdet.spectrum import spectrum_measures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _layer(name: str, eigs: list[float], count: int) -> dict:
    measures = spectrum_measures(eigs)
    measures["id_per_width"] = measures["id_dof"] / len(eigs)
    return {"name": name, "count": count, "channels": len(eigs), "eigenvalues": eigs,
            "measures": measures}


@pytest.fixture()
def result() -> dict:
    """Two checkpoints, two layers; 'b' at init has an all-zero direction and few samples."""
    return {
        "format": "test",
        "meta": {"config": "tiny.py", "split": "val", "num_images": 2, "forward": "fw",
                 "lambda_rule": "lambda = 0.001 x largest eigenvalue of each layer"},
        "checkpoints": [
            {"label": "S (scratch)", "checkpoint": None, "layers": {
                "a": _layer("a", [4.0, 2.0, 1.0, 0.5], 100),
                "b": _layer("b", [1.0, 1.0, 0.0], 3)}},
            {"label": "I (pretrained)", "checkpoint": "x.pth", "layers": {
                "a": _layer("a", [8.0, 1.0, 0.1, 0.01], 100),
                "b": _layer("b", [3.0, 2.0, 1.0], 3)}},
        ],
    }


def test_table_rows_hold_the_measures(result: dict) -> None:
    text = format_spectrum_table(result)
    lines = text.splitlines()
    assert "tiny.py" in lines[0] and "0.001" in lines[0]
    rows = [line for line in lines if "(scratch)" in line or "(pretrained)" in line]
    assert len(rows) == 4  # 2 layers x 2 checkpoints
    # First row: layer a, S (scratch); by hand, lambda = 0.004:
    # N = 4/4.004 + 2/2.004 + 1/1.004 + 0.5/0.504; PR = 7.5^2 / 21.25; n95 = 4.
    n_hand = 4 / 4.004 + 2 / 2.004 + 1 / 1.004 + 0.5 / 0.504
    cells = rows[0].split()
    assert cells[:3] == ["a", "S", "(scratch)"]
    assert cells[3:5] == ["4", "100"]
    assert float(cells[5]) == pytest.approx(n_hand, abs=0.005)
    assert float(cells[6]) == pytest.approx(n_hand / 4, abs=0.0005)
    assert float(cells[7]) == pytest.approx(7.5**2 / 21.25, abs=0.005)
    assert cells[9] == "4"
    # The layer name is printed on its first row only.
    assert rows[1].split()[:2] == ["I", "(pretrained)"]
    # Layer b: 3 samples for 3 channels is flagged, and explained.
    assert rows[2].split()[4] == "3*"
    assert "rank <= samples - 1" in text
    assert float(rows[2].split()[5]) == pytest.approx(2 * 1 / 1.001, abs=0.005)


def test_eigenspectra_figure_plots_normalised_eigenvalues(result: dict) -> None:
    fig, axes = eigenspectra_figure(result)
    try:
        assert len(axes) == 2
        for ax, name in zip(axes, ["a", "b"], strict=True):
            assert ax.get_yscale() == "log"
            assert ax.get_xlabel() and ax.get_ylabel() and name in ax.get_title()
            assert [line.get_label() for line in ax.lines] == ["S (scratch)", "I (pretrained)"]
        x, y = axes[0].lines[1].get_data()
        np.testing.assert_array_equal(x, [1, 2, 3, 4])
        np.testing.assert_allclose(y, [1.0, 1 / 8, 0.1 / 8, 0.01 / 8])
        # The zero eigenvalue of b at init is left out of the log plot.
        _, y0 = axes[1].lines[0].get_data()
        np.testing.assert_allclose(y0[:2], [1.0, 1.0])
        assert np.isnan(y0[2])
        assert fig._suptitle is not None and fig._suptitle.get_text()
    finally:
        plt.close(fig)


@pytest.mark.parametrize("per_width", [False, True])
def test_id_bars_have_one_bar_per_checkpoint_and_layer(result: dict, per_width: bool) -> None:
    fig, ax = id_bars_figure(result, per_width=per_width)
    try:
        assert len(ax.containers) == 2
        assert ax.get_title() and ax.get_xlabel() == "layer" and ax.get_ylabel()
        assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
        key = "id_per_width" if per_width else "id_dof"
        for container, run in zip(ax.containers, result["checkpoints"], strict=True):
            heights = [bar.get_height() for bar in container]
            expected = [run["layers"][n]["measures"][key] for n in ("a", "b")]
            np.testing.assert_allclose(heights, expected)
        # b at init: two unit eigenvalues, lambda = 0.001 -> N = 2 / 1.001.
        b_init = ax.containers[0][1].get_height()
        assert b_init == pytest.approx(2 / 1.001 / (3 if per_width else 1))
    finally:
        plt.close(fig)


def test_report_writes_json_and_three_pngs(result: dict, tmp_path: Path) -> None:
    paths = write_spectrum_report(result, tmp_path / "out")
    assert set(paths) == {"json", "eigenspectra", "id", "id_per_width"}
    assert json.loads(paths["json"].read_text()) == result
    for key in ("eigenspectra", "id", "id_per_width"):
        assert paths[key].read_bytes()[:8] == PNG_MAGIC
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "eigenspectra.png", "id_per_layer.png", "id_per_width.png", "spectrum.json"]


def _history() -> dict:
    ids = {"a": [40.0, 30.0, 35.0], "b": [10.0, 10.5, 11.0]}
    entries = [{"iteration": it, "epoch": i, "layers": {n: {"id": v[i]} for n, v in ids.items()}}
               for i, it in enumerate([0, 4, 8])]
    return {
        "meta": {"lambda_rule": "lambda = 0.001 x largest eigenvalue"},
        "entries": entries,
        "dynamics": {"a": {"dropping": True, "rebounding": True, "min_index": 1},
                     "b": {"dropping": False, "rebounding": False, "min_index": 0}},
    }


def test_dynamics_figure_lines_and_markers(tmp_path: Path) -> None:
    fig, ax = id_dynamics_figure(_history())
    try:
        labels = [line.get_label() for line in ax.lines]
        assert labels[0] == "a (dropping, rebounding)"
        assert "b" in labels
        x, y = ax.lines[0].get_data()
        np.testing.assert_array_equal(x, [0, 4, 8])
        np.testing.assert_array_equal(y, [40.0, 30.0, 35.0])
        # The minimum (iteration 4) and the rebound (iteration 8) of 'a' are marked.
        markers = {line.get_marker(): line.get_data() for line in ax.lines[1:3]}
        assert [float(v) for v in np.ravel(markers["v"][0])] == [4.0]
        assert [float(v) for v in np.ravel(markers["^"][0])] == [8.0]
        assert ax.get_xlabel() == "training iteration" and ax.get_ylabel() and ax.get_title()
    finally:
        plt.close(fig)
    path = plot_id_dynamics(_history(), tmp_path / "dyn.png")
    assert path.read_bytes()[:8] == PNG_MAGIC
