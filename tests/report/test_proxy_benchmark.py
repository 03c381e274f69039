"""Correlation statistics of the proxy benchmark against SciPy and hand counts."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import kendalltau, spearmanr

from nasdet.report.proxy_benchmark import correlations, top_k_recall, write_proxy_report


def _rows(n: int = 30, seed: int = 0):
    rng = np.random.default_rng(seed)
    ap = rng.uniform(0.2, 0.8, n)
    good = ap + rng.normal(0, 0.05, n)   # tracks AP
    noise = rng.normal(0, 1, n)          # unrelated
    return [{"ap50": float(a), "proxy/good": float(g), "proxy/noise": float(z),
             "seconds/proxy/good": 0.5, "seconds/proxy/noise": 1.0, "seconds/full": 100.0}
            for a, g, z in zip(ap, good, noise, strict=True)]


def test_top_k_recall_hand_cases():
    target = np.arange(20, dtype=float)          # top 10% = indices 19, 18
    assert top_k_recall(target, target) == 1.0
    assert top_k_recall(target, -target) == 0.0
    score = target.copy()
    score[18] = -1                               # proxy keeps 19, misses 18
    assert top_k_recall(target, score) == 0.5


def test_correlations_match_scipy_and_intervals_cover():
    rows = _rows()
    table = {r["proxy"]: r for r in correlations(rows, target="ap50", n_boot=300)}
    ap = np.array([r["ap50"] for r in rows])
    good = np.array([r["proxy/good"] for r in rows])
    assert table["good"]["kendall_tau"] == pytest.approx(kendalltau(good, ap).statistic)
    assert table["good"]["spearman_rho"] == pytest.approx(spearmanr(good, ap).statistic)
    assert table["good"]["tau_lo"] <= table["good"]["kendall_tau"] <= table["good"]["tau_hi"]
    assert table["good"]["tau_lo"] > 0.5 and table["noise"]["tau_lo"] < 0 < table["noise"]["tau_hi"]
    assert table["good"]["cost_ratio"] == pytest.approx(0.005)
    assert list(table) == ["good", "noise"]      # sorted by tau


def test_report_files(tmp_path):
    rows = _rows()
    for r in rows:
        r["ap"] = r["ap50"] / 2
    noise = {"trial": 0, "values": {"ap": [0.25, 0.26, 0.245], "ap50": [0.5, 0.52, 0.49]}}
    path = write_proxy_report(rows, tmp_path, noise=noise, command="make bench")
    text = path.read_text()
    assert "| good |" in text and "make bench" in text
    seed_std = float(np.std([0.5, 0.52, 0.49], ddof=1))
    arch_std = float(np.std([r["ap50"] for r in rows], ddof=1))
    assert f"(std {seed_std:.3f})" in text and f"is {arch_std / seed_std:.1f}x the seed" in text
    data = json.loads((tmp_path / "correlations.json").read_text())
    assert data["n_architectures"] == 30 and list(data["targets"]) == ["ap", "ap50"]
    assert data["targets"]["ap50"]["seed_noise"]["std"] == pytest.approx(seed_std)
    # AP is AP50 / 2 here: the same ranks, so the same correlations.
    assert data["targets"]["ap"]["correlations"] == data["targets"]["ap50"]["correlations"]
    for target in ("ap", "ap50"):
        assert (tmp_path / f"proxy_scatter_{target}.png").stat().st_size > 1000
