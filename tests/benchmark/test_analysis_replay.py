"""Analysis of a table (target epoch, predictors, goal) and replayed searches over it."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nasdet.benchmark.analysis import analyse, id_guided_gain, report
from nasdet.benchmark.replay import (
    CHANCE,
    Strategy,
    TableObjective,
    regret_curve,
    replay,
    seconds_to_reach,
)
from nasdet.benchmark.table import load_benchmark


def test_analysis_ranks_an_oracle_first_and_an_anti_proxy_last(synthetic_table):
    result = analyse(load_benchmark(synthetic_table), n_resamples=300)
    preds = result["predictors"]
    # Seed noise 0.01 on qualities spread over 0.1-0.4: the ranking reproduces at once.
    assert result["target_epoch"] == 1 and result["retest"][0]["tau"] > 0.6
    assert result["stability"] is None  # no epoch before the first to compare with
    assert preds["oracle"]["tau"] > 0.8 and preds["oracle"]["delta_tau_params_ci"][0] > 0
    assert preds["anti"]["tau"] < -0.8
    assert abs(preds["random"]["tau"]) < 0.35
    # The fidelity baselines need a later target epoch than their own.
    assert not any(n.startswith("fidelity/") for n in preds)
    assert preds["oracle"]["cost_fraction"] == pytest.approx(0.1 / 10.0)
    assert "oracle" not in result["goal"]["passing"]  # not an ID proxy


def test_the_goal_says_how_many_architectures_would_decide_it():
    from nasdet.benchmark.analysis import _goal

    def stat(lo, hi, kind="id"):
        return {"kind": kind, "tau_ci": [lo, hi], "delta_tau_params_ci": [-0.1, 0.1],
                "delta_tau_macs_ci": [-0.1, 0.1], "cost_fraction": 0.01}

    # Widest ID interval half-width 0.15 at n = 100: (0.15 / 0.1)^2 * 100 = 225 by 1/sqrt(n);
    # a wider non-ID interval does not count.
    goal = _goal({"a": stat(0.0, 0.3), "b": stat(0.1, 0.3), "p": stat(-0.5, 0.5, "proxy")}, 100)
    assert not goal["decisive"] and goal["architectures_needed"] == 225
    goal = _goal({"a": stat(0.0, 0.31)}, 100)
    assert goal["architectures_needed"] == 241  # 240.25 rounds up
    goal = _goal({"a": stat(0.1, 0.3)}, 100)
    assert goal["decisive"] and goal["architectures_needed"] is None


def test_the_goal_bounds_what_a_cheap_id_predictor_could_gain_over_macs():
    from nasdet.benchmark.analysis import _goal

    def stat(hi_macs, cost, kind="id"):
        return {"kind": kind, "tau_ci": [0.0, 0.2], "delta_tau_params_ci": [-0.1, 0.1],
                "delta_tau_macs_ci": [hi_macs - 0.2, hi_macs], "cost_fraction": cost}

    # The highest upper end among cheap ID predictors; a costly one and a non-ID one with
    # higher ends do not count.
    goal = _goal({"a": stat(0.03, 0.01), "b": stat(0.05, 0.019), "dear": stat(0.2, 0.05),
                  "snip": stat(0.3, 0.001, "proxy")}, 100)
    assert goal["bound"] == {"delta_tau_macs_upper": 0.05, "predictor": "b"}
    assert _goal({"dear": stat(0.2, 0.05)}, 100)["bound"] is None


def test_a_handful_of_seed_pairs_does_not_choose_the_target_epoch(synthetic_table):
    from nasdet.benchmark.analysis import MIN_PAIRS

    bench = load_benchmark(synthetic_table)
    pairs = bench.seed_pairs()
    assert len(pairs) == MIN_PAIRS
    drop = {(b["arch_id"], b["seed"]) for _, b in pairs[1:]}  # one pair left
    bench.rows = [r for r in bench.rows if (r["arch_id"], r["seed"]) not in drop]
    result = analyse(bench, n_resamples=100)
    assert result["seed_pairs"] == 1 and result["target_epoch"] == bench.epochs == 6
    assert f"fewer than {MIN_PAIRS}" in result["target_reason"]
    # Every run's curve is its final AP times one shared factor: epochs 5 and 6 rank alike.
    assert result["stability"]["epochs"] == [5, 6]
    assert result["stability"]["tau"] == pytest.approx(1.0)


def _with_proposals(bench, gains: list[float]):
    """Proposal rows of archs 0.. (two seeds each in the table): AP + gain, half the params."""
    import copy

    props = []
    for i, gain in enumerate(gains):
        source = next(r for r in bench.rows if (r["arch_id"], r["seed"]) == (i, 0))
        row = copy.deepcopy(source)
        row.update(arch_id=10_000 + i, origin="id_guided", source_arch=i, source_seed=0,
                   n_params=source["n_params"] / 2, macs=source["macs"] * 0.9,
                   ap=[v + gain for v in source["ap"]])
        props.append(row)
    bench.rows = [*bench.rows, *props]
    return bench


def test_id_guided_proposals_are_held_against_their_sources(synthetic_table, tmp_path):
    from nasdet.report.benchmark_report import write_benchmark_report

    bench = load_benchmark(synthetic_table)
    assert id_guided_gain(bench) is None  # no proposal rows
    gains = [0.01, 0.03, -0.02, 0.04, 0.02]
    rng = np.random.default_rng(1)
    for arch in range(40):  # MACs of their own (the table's are 100 x #params)
        factor = rng.uniform(50, 150)
        for r in bench.rows:
            r["macs"] = r["n_params"] * factor if r["arch_id"] == arch else r["macs"]
    bench = _with_proposals(bench, gains)
    gain = id_guided_gain(bench, epoch=6, n_resamples=300)
    assert gain["n"] == 5 and gain["delta"]["mean"] == pytest.approx(np.mean(gains))
    assert gain["delta"]["positive"] == pytest.approx(4 / 5)
    lo, hi = gain["delta"]["ci"]
    assert lo < np.mean(gains) < hi and min(gains) <= lo and hi <= max(gains)
    assert gain["params_ratio"] == pytest.approx(0.5) and gain["fewer_params"] == 1.0
    assert gain["macs_ratio"] == pytest.approx(0.9)
    # Against the sources' second seed: the gains plus that seed's own difference.
    pairs = {a["arch_id"]: b["ap"][5] - a["ap"][5] for a, b in bench.sampled().seed_pairs()}
    other = [g - pairs[i] for i, g in enumerate(gains)]
    assert gain["delta_other_seed"]["mean"] == pytest.approx(np.mean(other))
    gaps = list(pairs.values())
    assert gain["seed_sd"] == pytest.approx(np.std(gaps, ddof=1) / np.sqrt(2))
    # The size control: scikit-learn's least squares of AP on log MACs and log #params.
    from sklearn.linear_model import LinearRegression

    pop = bench.sampled().first_seed()
    feats = [[np.log(r["macs"]), np.log(r["n_params"])] for r in pop]
    fit = LinearRegression().fit(feats, [r["ap"][5] for r in pop])
    props = [r for r in bench.rows if r.get("origin") == "id_guided"]
    srcs = [next(r for r in pop if r["arch_id"] == p["source_arch"]) for p in props]
    expected = fit.predict([[np.log(r["macs"]), np.log(r["n_params"])] for r in props]) - \
        fit.predict([[np.log(r["macs"]), np.log(r["n_params"])] for r in srcs])
    assert gain["beyond_size"]["expected"] == pytest.approx(expected.mean(), abs=1e-9)
    assert gain["beyond_size"]["mean"] == pytest.approx(np.mean(gains) - expected.mean(),
                                                        abs=1e-9)
    assert gain["size_model"]["log_params"][0] == pytest.approx(fit.coef_[1], rel=1e-6)
    # Proposals are not of the sampled population: its statistics are unchanged.
    assert gain["population_mean"] == pytest.approx(
        np.mean(bench.target(bench.sampled().first_seed(), "ap", 6)))
    result = analyse(bench, n_resamples=100)
    assert result["architectures"] == 40 and result["id_guided"]["n"] == 5
    text = write_benchmark_report(result, tmp_path / "report").read_text()
    assert "## ID-guided widths against their sources" in text
    assert "| the source's run it came from | 5 | +0.016 [" in text
    assert "Median #params ratio 0.50 (proposal / source; 100% of the proposals" in text
    assert "| what size predicts (fit on log MACs, log #params) | 5 | " in text


def test_report_writes_markdown_and_plots(synthetic_table):
    path = report(synthetic_table, n_resamples=200)
    text = path.read_text()
    assert "Test-retest" in text and "| oracle | proxy |" in text
    # No ID proxy of the synthetic table passes: the verdict bounds what they could gain.
    assert "**Goal not met**" in text
    assert "has a paired delta tau over MACs of at most " in text
    # target epoch 1 at 10 CPU s an epoch; one machine, so no scale to state
    assert "median 10 CPU s per architecture (one thread; 10-10)." in text
    for png in ("retest_ap.png", "tau_ap.png", "delta_tau_params_ap.png"):
        assert (path.parent / png).stat().st_size > 1000


def test_nearest_row_of_its_own_params_is_itself(synthetic_table):
    bench = load_benchmark(synthetic_table)
    rows = bench.first_seed()
    obj = TableObjective(bench, rows, 6)
    for i in (0, 7, 39):
        assert obj.nearest(rows[i]["params"], set()) == i
    assert obj.nearest(rows[7]["params"], {7}) != 7


def test_random_replay_visits_every_architecture_once(synthetic_table):
    bench = load_benchmark(synthetic_table)
    trace = replay(bench, Strategy("random"), target_epoch=6, seed=3)
    assert sorted(trace.trained) == list(range(40))
    assert trace.seconds[-1] == pytest.approx(40 * 6 * 10.0)
    best = max(r["ap"][5] for r in bench.first_seed())
    assert trace.best[-1] == best
    assert np.all(np.diff(trace.best) >= 0)


def test_asha_and_an_oracle_rung_save_training(synthetic_table):
    bench = load_benchmark(synthetic_table)
    rows = bench.first_seed()
    top = np.quantile([r["ap"][5] for r in rows], 0.95)

    def mean_seconds(strategy):
        out = [seconds_to_reach(replay(bench, strategy, target_epoch=6, seed=s), top)
               for s in range(8)]
        assert all(math.isfinite(v) for v in out)
        return float(np.mean(out))

    random = mean_seconds(Strategy("random"))
    asha = replay(bench, Strategy("asha", pruner="asha"), target_epoch=6, seed=0)
    assert asha.seconds[-1] < 40 * 60 * 0.7  # most architectures stop at an early rung
    oracle = mean_seconds(Strategy("oracle rung", proxy="oracle", proxy_keep=0.2))
    assert oracle < random
    anti = replay(bench, Strategy("anti rung", proxy="anti", proxy_keep=0.2), target_epoch=6)
    assert len(anti.trained) < 40  # the rung stopped most before training
    # The control rung: random scores, free, so it stops architectures blind of their AP.
    runs = [replay(bench, Strategy("chance", proxy=CHANCE), target_epoch=6, seed=s)
            for s in range(2)]
    assert all(10 < len(t.trained) < 35 for t in runs) and runs[0].trained != runs[1].trained
    trained = {r["arch_id"]: r for r in rows}
    for t in runs:  # what it spent is exactly the training of what it let through
        assert t.seconds[-1] == pytest.approx(sum(sum(bench.epoch_costs(trained[a]))
                                                  for a in t.trained))


def test_a_replay_costs_the_same_whichever_machine_trained_a_row(synthetic_table):
    bench = load_benchmark(synthetic_table)
    mixed = load_benchmark(synthetic_table)
    # Every third architecture (both seeds) on a CPU twice as fast: half the seconds.
    for row in mixed.rows:
        if row["arch_id"] % 3 == 0:
            row["machine"] = {"cpu": "twice as fast"}
            row["epoch_cpu_seconds"] = [s / 2 for s in row["epoch_cpu_seconds"]]
            row["train_cpu_seconds"] /= 2
    one = replay(bench, Strategy("asha", pruner="asha"), target_epoch=6, seed=1)
    two = replay(mixed, Strategy("asha", pruner="asha"), target_epoch=6, seed=1)
    assert two.trained == one.trained
    assert two.seconds == pytest.approx(one.seconds, rel=1e-9)


def test_tpe_replay_learns_from_the_table(synthetic_table):
    bench = load_benchmark(synthetic_table)
    trace = replay(bench, Strategy("tpe", sampler="tpe"), target_epoch=6, n_trials=20, seed=0)
    assert len(trace.trained) == 20 == len(set(trace.trained))
    grid = np.array([0.0, 600.0, 1200.0])
    regret = regret_curve([trace], grid, optimum=max(r["ap"][5] for r in bench.first_seed()))
    assert np.isnan(regret[0, 0]) and regret[0, 2] <= regret[0, 1]


def test_each_strategy_is_compared_with_the_search_without_its_last_part():
    from tests.conftest import load_tool

    se = load_tool("search_efficiency", folder="benchmarks")
    plan = se.strategies(["snip", "macs"], "snip")
    base = {s.name: (b.name if (b := se.without_last_part(s, plan)) else None) for s in plan}
    assert base == {"random": None, "tpe": None, "tpe+asha": "tpe", "tpe+id_guided": "tpe",
                    "tpe+rung:chance": "tpe", "tpe+rung:snip": "tpe", "tpe+rung:macs": "tpe",
                    "tpe+rung:snip+asha": "tpe+asha"}
    # Paired by seed, a search that halves every repeat's seconds is 0.5 exactly; the
    # same repeats resampled apart leave the spread between seeds in the interval.
    rng = np.random.default_rng(0)
    b = rng.uniform(100, 1000, 50)
    assert se._boot_ratio(b / 2, b, rng, paired=True) == pytest.approx((0.5, 0.5))
    lo, hi = se._boot_ratio(b / 2, b, rng)
    assert lo < 0.45 and hi > 0.55
