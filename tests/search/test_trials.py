"""The trial bookkeeping both drivers share, on real Optuna studies (in memory or SQLite)."""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.storages._heartbeat import fail_stale_trials
from optuna.trial import TrialState

from nasdet.errors import NasdetError
from nasdet.search.config import Objective, SearchConfig, Stage
from nasdet.search.trials import (
    ENQUEUED_ATTR,
    ID_GUIDED_ATTR,
    INTERRUPTED_REASON,
    best_text,
    check_study,
    counts_towards_n_trials,
    enqueue_id_proposal,
    enqueue_listed,
    error_text,
    interrupted,
    is_scored,
    make_pruner,
    mark_interrupted,
    n_taken,
    outcome_text,
    params_tried,
    pareto_front,
    proxy_rung_prunes,
    proxy_score,
    rung_scores,
    stage_score,
    trial_line,
    trial_params,
    trial_rows,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

STAGES = (Stage("complexity", "size"),
          Stage("proxy", "id", {"proxies": ["id_mean"], "report": "id_mean"}),
          Stage("train", "short", {"epochs": 1}),
          Stage("train", "full", {"epochs": 2}))


def _config(tmp_path: Path, *, objectives=(("ap50", "maximize"),), n_trials: int = 4,
            pruner: dict | None = None, enqueue=(), stages=STAGES) -> SearchConfig:
    return SearchConfig(
        path=tmp_path / "search.yaml", space_path=tmp_path / "space.yaml", n_trials=n_trials,
        objectives=tuple(Objective(m, d) for m, d in objectives), stages=tuple(stages),
        sampler={"type": "random"}, pruner=pruner or {"type": "median"},
        enqueue=tuple(enqueue))


def _raises(trial: optuna.Trial) -> float:
    trial.suggest_int("w", 16, 64, step=16)
    try:
        raise ValueError("out of memory")
    except ValueError as exc:  # as the Optuna driver records a trial that raised
        trial.set_user_attr("fail_reason", error_text(exc))
        raise


def test_a_trial_the_heartbeat_failed_does_not_count_one_that_raised_does(tmp_path):
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'study.db'}",
                                         heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="s")
    study.optimize(lambda t: t.suggest_int("w", 16, 64, step=16) / 64, n_trials=1)
    study.optimize(_raises, n_trials=1, catch=(ValueError,))
    cut_off = study.ask()  # its worker is killed: the heartbeat stops
    storage.record_heartbeat(cut_off._trial_id)
    study.enqueue_trial({"w": 32})
    time.sleep(2.5)  # > grace_period (1 s) at SQLite's one-second clock
    fail_stale_trials(study)
    trials = study.get_trials()
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL,
                                         TrialState.FAIL, TrialState.WAITING]
    assert trials[1].user_attrs["fail_reason"] == "ValueError: out of memory"
    assert [counts_towards_n_trials(t) for t in trials] == [True, True, False, False]
    assert [interrupted(t) for t in trials] == [False, False, True, False]
    assert n_taken(trials) == 2 and n_taken(trials, (TrialState.WAITING,)) == 3
    rows = trial_rows(study, _config(tmp_path))
    assert rows[1]["fail_reason"] == "ValueError: out of memory"
    assert rows[2]["fail_reason"] == INTERRUPTED_REASON and rows[2]["state"] == "FAIL"


def test_mark_interrupted_is_what_a_heartbeat_would_have_done(tmp_path):
    study = optuna.create_study()  # in memory: no heartbeat, the driver marks it
    study.ask()
    running = study.get_trials()[0]
    assert n_taken([running], (TrialState.RUNNING,)) == 1 and n_taken([running]) == 0
    mark_interrupted(study, running)
    (trial,) = study.get_trials()
    assert trial.state == TrialState.FAIL and trial.user_attrs == {"interrupted": True}
    assert interrupted(trial) and not counts_towards_n_trials(trial)


def test_params_tried_sees_enqueued_and_finished_params_in_any_key_order():
    study = optuna.create_study()
    study.enqueue_trial({"a": 16, "b": "scratch"})  # WAITING: its params are fixed params
    (waiting,) = study.get_trials()
    assert waiting.params == {} and trial_params(waiting) == {"a": 16, "b": "scratch"}
    assert params_tried([waiting], {"b": "scratch", "a": 16})
    assert not params_tried([waiting], {"a": 32, "b": "scratch"})
    assert not params_tried([waiting], {"a": 16})


def test_enqueue_id_proposal_enqueues_a_proposal_once_labelled_with_its_source():
    study = optuna.create_study()
    assert enqueue_id_proposal(study, {"w": 48}, source=3)
    assert not enqueue_id_proposal(study, {"w": 48}, source=5)  # waiting already
    trial = study.ask()
    assert trial.suggest_int("w", 16, 64, step=16) == 48
    assert trial.user_attrs[ID_GUIDED_ATTR] == 3
    study.tell(trial, 0.5)
    assert not enqueue_id_proposal(study, {"w": 48}, source=7)  # ran already
    assert len(study.get_trials()) == 1


def test_enqueue_listed_respects_n_trials_and_reruns_a_cut_off_candidate(tmp_path):
    listed = [{"name": n, "params": {"w": w}} for n, w in (("a", 16), ("b", 32), ("c", 48))]
    study = optuna.create_study(direction="maximize")
    assert enqueue_listed(study, _config(tmp_path, n_trials=2, enqueue=listed)) == ["a", "b"]
    assert enqueue_listed(study, _config(tmp_path, n_trials=3, enqueue=listed)) == ["c"]
    assert enqueue_listed(study, _config(tmp_path, n_trials=9, enqueue=listed)) == []

    study = optuna.create_study(direction="maximize")
    for w in (16, 32):
        study.enqueue_trial({"w": w})
        trial = study.ask()
        trial.suggest_int("w", 16, 64, step=16)
    study.tell(study.get_trials()[0].number, 0.4)  # w=16 finished
    mark_interrupted(study, study.get_trials()[1])  # w=32: a killed driver's trial
    config = _config(tmp_path, n_trials=3, enqueue=[
        {"name": "done", "params": {"w": 16}}, {"name": "cut", "params": {"w": 32}},
        {"name": "x", "params": {"w": 48}}, {"name": "y", "params": {"w": 64}}])
    # 'done' ran (tried, taken); 'cut' did not count: run again; n_trials 3 = 1 + 2 enqueued.
    assert enqueue_listed(study, config) == ["cut", "x"]
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert [(t.user_attrs[ENQUEUED_ATTR], trial_params(t)) for t in waiting] == [
        ("cut", {"w": 32}), ("x", {"w": 48})]


def test_is_scored_stage_score_and_proxy_score(tmp_path):
    single, multi = _config(tmp_path), _config(
        tmp_path, objectives=(("ap50", "maximize"), ("macs", "minimize")))
    assert [is_scored(s, single) for s in STAGES] == [False, True, True, True]
    assert [is_scored(s, multi) for s in STAGES] == [False, True, False, False]
    unreported = Stage("proxy", "record", {"proxies": ["id_mean"], "report": None})
    assert not is_scored(unreported, single)
    metrics = {"ap50": 0.41, "ap": 0.2, "epochs": 2.0, "proxy/id_mean": 7.5}
    assert stage_score(single, STAGES[3], metrics) == 0.41
    ap = _config(tmp_path, objectives=(("ap", "maximize"),))
    assert stage_score(ap, STAGES[3], metrics) == 0.2
    macs = _config(tmp_path, objectives=(("macs", "minimize"),))
    assert stage_score(macs, STAGES[3], metrics) == 0.41  # no such metric: ap50
    assert stage_score(single, STAGES[1], metrics) is None
    assert stage_score(single, STAGES[0], metrics) is None
    assert proxy_score(STAGES[1], metrics) == 7.5
    assert proxy_score(unreported, metrics) is None and proxy_score(STAGES[2], metrics) is None
    assert proxy_score(STAGES[1], {"ap50": 0.4}) is None  # the proxy failed


def test_proxy_rung_prunes_below_the_hand_computed_median(tmp_path):
    up = _config(tmp_path)
    down = _config(tmp_path, objectives=(("macs", "minimize"),))
    others = [0.2, 0.9, 0.4]  # median 0.4
    assert proxy_rung_prunes(up, 0.3, others) and not proxy_rung_prunes(up, 0.5, others)
    assert not proxy_rung_prunes(up, 0.4, others)  # at the median: kept
    assert proxy_rung_prunes(down, 0.5, others) and not proxy_rung_prunes(down, 0.3, others)
    even = [0.8, 0.2, 0.6, 0.4]  # median (0.4 + 0.6) / 2 = 0.5
    assert proxy_rung_prunes(up, 0.49, even) and not proxy_rung_prunes(up, 0.51, even)
    assert proxy_rung_prunes(up, 0.29, [0.2, math.nan, 0.4])  # NaN left out: median 0.3
    assert not proxy_rung_prunes(up, 0.31, [0.2, math.nan, 0.4])
    assert not proxy_rung_prunes(up, 0.1, [0.9])  # fewer than 2 start-up trials
    late = _config(tmp_path, pruner={"type": "median", "n_startup_trials": 4})
    assert not proxy_rung_prunes(late, 0.1, others)
    assert proxy_rung_prunes(late, 0.1, [*others, 0.5])
    stage = Stage("proxy", "proxy", {"report": "snip", "n_startup_trials": 4})  # over pruner's
    assert not proxy_rung_prunes(up, 0.1, others, stage)
    assert proxy_rung_prunes(up, 0.1, [*others, 0.5], stage)
    assert not proxy_rung_prunes(_config(tmp_path, pruner={"type": "none"}), 0.1, others)
    multi = _config(tmp_path, objectives=(("ap50", "maximize"), ("macs", "minimize")))
    assert not proxy_rung_prunes(multi, 0.1, others)
    assert not proxy_rung_prunes(up, math.nan, others)


def test_a_proxy_rung_counts_the_trials_it_pruned(tmp_path):
    study = optuna.create_study(direction="maximize")
    for proxy, state in ((0.9, TrialState.COMPLETE), (0.8, TrialState.COMPLETE),
                         (0.1, TrialState.PRUNED), (0.2, TrialState.PRUNED),
                         (0.7, TrialState.RUNNING)):
        trial = study.ask()
        trial.set_user_attr("proxy/snip", proxy)
        if state != TrialState.RUNNING:
            study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    study.ask().set_user_attr("rejected", "over budget")  # never reached the rung
    now = study.ask()
    now.set_user_attr("proxy/snip", 0.6)
    scores = rung_scores(study.get_trials(deepcopy=False), "proxy/snip", now.number)
    assert sorted(scores) == [0.1, 0.2, 0.7, 0.8, 0.9]  # median 0.7: 0.6 is pruned
    assert proxy_rung_prunes(_config(tmp_path), 0.6, scores)
    assert not proxy_rung_prunes(_config(tmp_path), 0.75, scores)
    # Over the complete trials alone (median 0.85) 0.75 would be pruned too.
    assert proxy_rung_prunes(_config(tmp_path), 0.75, [0.9, 0.8])


def test_stage_scores_drive_the_configs_median_pruner(tmp_path):
    config = _config(tmp_path)
    study = optuna.create_study(direction="maximize", pruner=make_pruner(config))
    verdicts = []
    for ap50 in (0.5, 0.7, 0.4, 0.65):  # median of the first two: 0.6
        trial = study.ask()
        metrics = {"ap50": ap50, "epochs": 1.0}
        trial.report(stage_score(config, STAGES[2], metrics), int(metrics["epochs"]))
        verdicts.append(trial.should_prune())
        study.tell(trial, ap50)
    assert verdicts == [False, False, True, False]


def _result(**extra) -> dict:
    """A Ray Tune trial's last result as :func:`nasdet.search.ray_trial.run_trial` reports it."""
    return {"ap50": 0.5, "params": 3.1e6, "epochs": 2.0, "proxy/id_mean": 7.0,
            "seconds/evaluator": 11.0, "score": 0.5, "fidelity": 2.0, "epoch": 2,
            "proxy_score": math.nan, "stage": 3, "stage_name": "full", "stages_done": 4,
            "node_id": "n1", "trial_dir": "/w/trials/a", "candidate_key": "k",
            "time_total_s": 12.0, "training_iteration": 4, "node_ip": "127.0.0.1",
            "trial_id": "a", "config/w": 32, "done": True, **extra}


def test_rows_of_both_drivers_have_the_same_columns_in_the_same_order(tmp_path):
    from nasdet.search.ray_tune import result_row

    config = _config(tmp_path)
    metrics = {k: v for k, v in _result().items()
               if k in ("ap50", "params", "epochs", "proxy/id_mean", "seconds/evaluator")}
    study = optuna.create_study(direction="maximize")
    cases = [  # (Optuna state, user attributes, Ray result changes, Ray error)
        (TrialState.COMPLETE, {ENQUEUED_ATTR: "base"}, {}, None),
        (TrialState.PRUNED, {"pruned_after": "short"},  # the last train stage never ran
         {"stages_done": 3, "stage_name": "short", "ap50": math.nan}, None),
        (TrialState.PRUNED, {"rejected": "over budget"}, {"rejected": "over budget"}, None),
        (TrialState.FAIL, {"fail_reason": "ValueError: x"}, {}, "ValueError: x"),
    ]
    for state, attrs, changes, _ in cases:
        trial = study.ask()
        trial.suggest_int("w", 32, 32)
        trial.set_user_attr("metrics", {k: v for k, v in metrics.items() if k not in changes})
        trial.set_user_attr("trial_dir", "/w/trials/a")
        trial.set_user_attr("ended_at", "full")
        for key, value in attrs.items():
            trial.set_user_attr(key, value)
        study.tell(trial, 0.5 if state == TrialState.COMPLETE else None, state=state)
    rows = trial_rows(study, config)
    for n, ((_, attrs, changes, error), row) in enumerate(zip(cases, rows, strict=True)):
        params = {"w": 32, **({ENQUEUED_ATTR: attrs[ENQUEUED_ATTR]} if n == 0 else {})}
        ray = result_row("a", params, _result(**changes), error, config, tag=f"{n + 1}_w=32")
        assert ray.pop("trial_id") == "a" and ray.pop("node_id") == "n1"
        assert ray.pop("node_ip") == "127.0.0.1" and ray.pop("seconds") == 12.0
        assert isinstance(row.pop("seconds"), float)
        assert list(ray) == list(row), (ray, row)
        assert ray == row
    assert rows[0]["state"] == "COMPLETE" and rows[0][ENQUEUED_ATTR] == "base"
    assert [r["state"] for r in rows[1:]] == ["PRUNED", "PRUNED", "FAIL"]
    missing = result_row("a", {"w": 32}, _result(ap50=math.nan), None, config, tag="1_x")
    assert missing["state"] == "FAIL"
    assert missing["fail_reason"] == "finished without every objective metric"


def test_pareto_front_and_best_text_agree_with_optuna(tmp_path):
    multi = _config(tmp_path, objectives=(("ap50", "maximize"), ("macs", "minimize")))
    hand = [(0.5, 10), (0.4, 12), (0.6, 20), (0.5, 10), (0.3, 5), (0.6, 25), (0.3, 5),
            (0.2, 5), (0.6, 20)]  # 1, 5, 7 dominated by 0, 2, 4; duplicates both stay
    rng = np.random.default_rng(0)
    for values, front in ((hand, [0, 2, 3, 4, 6, 8]), (rng.random((60, 2)).tolist(), None)):
        study = optuna.create_study(directions=["maximize", "minimize"])
        for v in values:
            study.add_trial(optuna.trial.create_trial(values=list(v)))
        complete = {t.number: t.values for t in study.trials}
        ours = sorted(pareto_front(complete, multi.objectives))
        assert ours == sorted(t.number for t in study.best_trials)
        assert front is None or ours == front
        assert best_text(multi, complete) == f"{len(ours)} on the Pareto front"
    single = _config(tmp_path)
    study = optuna.create_study(direction="maximize")
    for v in (0.31, 0.45, 0.2):
        study.add_trial(optuna.trial.create_trial(value=v))
    best = best_text(single, {t.number: t.values for t in study.trials})
    assert best == f"ap50={study.best_value:.4g} (trial {study.best_trial.number})"
    assert best == "ap50=0.45 (trial 1)"
    macs = _config(tmp_path, objectives=(("macs", "minimize"),))
    assert best_text(macs, {0: [3.0], 1: [2.5], 2: [4.0]}) == "macs=2.5 (trial 1)"
    assert best_text(single, {}) == "-"


def test_trial_line_and_outcome_texts():
    line = trial_line(3, "complete", "ap50=0.41", stage="full", seconds=52.4, done=4,
                      n_trials=8, best="ap50=0.45 (trial 1)", elapsed_s=120.0, finished_here=2)
    # 4 remaining x 120 s / 2 trials = 240 s = 4.0 min.
    assert line == ("[search] trial 3 complete: ap50=0.41 | ended at full | 52 s | 4/8 done "
                    "| best ap50=0.45 (trial 1) | ETA 4.0 min")
    assert trial_line(1, "fail", "", stage=None, seconds=None, done=8, n_trials=8, best="-",
                      elapsed_s=1.0, finished_here=1, note=" | log x").endswith(
        "fail: - | ended at ? | ? s | 8/8 done | best - | ETA 0 min | log x")
    assert "ETA -" in trial_line(0, "pruned", "p", stage="s", seconds=math.nan, done=1,
                                 n_trials=3, best="-", elapsed_s=5.0, finished_here=0)
    objectives = (Objective("ap50", "maximize"), Objective("macs", "minimize"))
    assert outcome_text("complete", objectives, [0.41234, 1.5e9]) == "ap50=0.4123, macs=1.5e+09"
    assert outcome_text("pruned", objectives, [], rejected="over budget") == "rejected: over budget"
    assert outcome_text("pruned", objectives, [], pruned="stopped by ASHA") == "stopped by ASHA"
    assert outcome_text("fail", objectives, [], fail_reason="E: x") == "E: x"


def test_check_study_names_both_mistakes(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    storage = optuna.storages.RDBStorage(url)
    assert check_study(storage, url, "s", resume=False) is False
    with pytest.raises(NasdetError, match=r"--resume: no study 's' to resume in sqlite:///"):
        check_study(storage, url, "s", resume=True)
    optuna.create_study(storage=storage, study_name="s")
    assert check_study(storage, url, "s", resume=True) is True
    with pytest.raises(NasdetError, match=r"--study-name: study 's' already exists in .* "
                                          "pass --resume"):
        check_study(storage, url, "s", resume=False)
