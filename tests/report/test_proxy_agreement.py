"""The search report's running check of its proxies against #params."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from nasdet.report.proxy_agreement import proxy_agreement, proxy_agreement_markdown


def _rows(n: int = 14, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    ap = rng.uniform(0.1, 0.6, n)
    params = rng.uniform(1e5, 5e6, n)           # unrelated to AP
    noisy = ap + rng.normal(0, 0.05, n)
    return [{"trial": i, "ap50": float(ap[i]), "params": float(params[i]),
             "macs": float(2 * params[i] + 1), "proxy/oracle": float(3 * ap[i] - 1),
             "proxy/noisy": float(noisy[i]), "proxy/size": float(params[i]),
             "proxy/params": float(params[i])} for i in range(n)]


def test_tau_and_the_verdict_against_params():
    rows = _rows()
    found = {e["proxy"]: e for e in proxy_agreement(rows, "ap50", "maximize", rungs=("noisy",),
                                                    n_resamples=500)}
    ap = [r["ap50"] for r in rows]
    for name in ("oracle", "noisy", "size"):
        expected = sps.kendalltau([r[f"proxy/{name}"] for r in rows], ap).statistic
        assert found[name]["tau"] == pytest.approx(expected, abs=1e-12)
        assert found[name]["n"] == len(rows)
    assert found["oracle"]["tau"] == pytest.approx(1.0)
    assert found["oracle"]["verdict"] == "beats #params"
    assert found["oracle"]["delta_tau_params_ci"][0] > 0
    # a proxy that is the parameter count cannot beat it: Δτ is exactly 0
    assert found["size"]["delta_tau_params"] == pytest.approx(0.0, abs=1e-12)
    assert found["size"]["verdict"] == "has not beaten #params on these trials"
    assert found["params"]["verdict"] == "baseline"
    assert found["noisy"]["rung"] and not found["oracle"]["rung"]


def test_a_minimised_objective_is_ranked_negated():
    rows = [{**r, "loss": -r["ap50"]} for r in _rows()]
    oracle = next(e for e in proxy_agreement(rows, "loss", "minimize", n_resamples=300)
                  if e["proxy"] == "oracle")
    assert oracle["tau"] == pytest.approx(1.0)


def test_too_few_trials_and_the_markdown():
    rows = _rows(n=2)
    entries = proxy_agreement(rows, "ap50", "maximize")
    assert all(e["verdict"].startswith("too few trained trials (2") for e in entries)
    text = "\n".join(proxy_agreement_markdown(entries, "ap50"))
    assert "## Proxies against the objective" in text and "| oracle |" in text
    assert proxy_agreement_markdown([], "ap50") == []
