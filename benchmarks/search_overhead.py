"""Per-trial overhead of the search backends, measured in one run on this machine.

    python benchmarks/search_overhead.py [--trials 8] [--json out.json]

The same ``N`` trivial trials (the tiny space, ``search_spaces/tiny_synth.yaml``
with its ``transfer`` dimension fixed to ``scratch`` so that no pretrained checkpoint
is needed; one ``complexity`` stage; random sampler, seed 0, so both backends draw the
same candidates) run through

* the Optuna driver (in this process, one trial after another);
* the Ray Tune driver on a local Ray started by the driver, one trial at a time
  (``max_concurrent=1``, comparable with Optuna), then as many at once as there are
  cores (``cpus_per_trial=1``).

For each run: wall-clock seconds of the search itself (Optuna's ``optimize``, Tune's
``fit``), seconds spent inside the evaluator (summed over trials; waiting on the
backend while reporting excluded; Ray measures it in the trial, Optuna here around
``TrialEvaluator.run``), and the overhead per trial = (search wall - in evaluator) / N.
With trials running concurrently the overhead per trial can be negative: it is the
wall time a trial adds, not the work it costs. ``ray.init`` (start of the local
Ray) is timed separately and not part of the search wall. Seconds are wall-clock on a
possibly shared machine; the load average is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SPACE = REPO / "search_spaces" / "tiny_synth.yaml"


def write_configs(tmp: Path, n_trials: int) -> Path:
    """The tiny space, trained from scratch only, and a search config with one cheap stage."""
    space = yaml.safe_load(SPACE.read_text())
    for dim in space["dimensions"].values():
        if dim.get("target") == "transfer":  # no pretrained checkpoint needed
            dim["choices"] = ["scratch"]
    space["base"] = str((SPACE.parent / space["base"]).resolve())
    space_path = tmp / "space.yaml"
    space_path.write_text(yaml.safe_dump(space, sort_keys=False))
    search = {"space": str(space_path), "n_trials": n_trials, "seed": 0,
              "sampler": {"type": "random"}, "pruner": {"type": "none"},
              "objectives": [{"metric": "params", "direction": "minimize"}],
              "stages": [{"type": "complexity"}]}
    path = tmp / "overhead.yaml"
    path.write_text(yaml.safe_dump(search, sort_keys=False))
    return path


def run_optuna(config_path: Path, work: Path) -> dict[str, Any]:
    from nasdet.search import OptunaSearch, load_search_config

    cfg = load_search_config(config_path)
    driver = OptunaSearch(cfg, work)
    inside = []
    run = driver.evaluator.run

    def timed_run(candidate, trial_dir, report):
        start, waiting = time.perf_counter(), [0.0]

        def timed_report(stage, index, metrics):
            t = time.perf_counter()
            try:
                report(stage, index, metrics)
            finally:
                waiting[0] += time.perf_counter() - t

        try:
            return run(candidate, trial_dir, timed_report)
        finally:
            inside.append(time.perf_counter() - start - waiting[0])

    driver.evaluator.run = timed_run
    start = time.perf_counter()
    study = driver.run()
    wall = time.perf_counter() - start
    states = [t.state.name for t in study.trials]
    return {"backend": "optuna (in process)", "trials": len(states), "wall_s": wall,
            "inside_s": sum(inside), "states": states, "init_s": None}


def run_ray(config_path: Path, work: Path, *, max_concurrent: int | None,
            label: str) -> dict[str, Any]:
    from nasdet.search import load_search_config
    from nasdet.search.ray_driver import RaySearch

    cfg = load_search_config(config_path)
    driver = RaySearch(cfg, work, max_concurrent=max_concurrent, cpus_per_trial=1)
    driver.run()
    rows = driver.rows()
    return {"backend": label, "trials": len(rows), "wall_s": driver.fit_seconds,
            "inside_s": sum(r.get("seconds/evaluator", 0.0) for r in rows),
            "states": [r["state"] for r in rows], "init_s": driver.ray_init_seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8, help="trials per backend (N)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    print(f"{os.cpu_count()} cores, load average at start {os.getloadavg()[0]:.2f}, "
          f"N = {args.trials} trials per backend", flush=True)
    results = []
    with tempfile.TemporaryDirectory(prefix="nasdet-overhead-") as tmp:
        tmp = Path(tmp)
        config = write_configs(tmp, args.trials)
        results.append(run_optuna(config, tmp / "optuna"))
        results.append(run_ray(config, tmp / "ray1", max_concurrent=1,
                               label="ray tune (1 trial at a time)"))
        results.append(run_ray(config, tmp / "rayn", max_concurrent=None,
                               label=f"ray tune ({os.cpu_count()} CPUs, 1 per trial)"))
    print()
    print(f"{'backend':<34} {'trials':>6} {'search wall s':>14} {'in evaluator s':>15} "
          f"{'overhead s/trial':>17} {'ray.init s':>11}")
    for r in results:
        r["overhead_per_trial_s"] = (r["wall_s"] - r["inside_s"]) / max(r["trials"], 1)
        init = f"{r['init_s']:.2f}" if r["init_s"] is not None else "-"
        print(f"{r['backend']:<34} {r['trials']:>6} {r['wall_s']:>14.2f} "
              f"{r['inside_s']:>15.2f} {r['overhead_per_trial_s']:>17.2f} {init:>11}")
        bad = [s for s in r["states"] if s != "COMPLETE"]
        if bad:
            print(f"    ({len(bad)} not complete: {', '.join(bad)}; "
                  "PRUNED = over the space's budget)")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}; seconds are wall-clock; "
          "overhead = (search wall - in evaluator) / trials; ray.init not included")
    if args.json:
        args.json.write_text(json.dumps({"units": "seconds (wall-clock)",
                                         "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
