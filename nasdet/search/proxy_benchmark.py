"""The proxy benchmark: sample architectures, score every proxy, train each, correlate.

It is a search with a random sampler, no pruning, one proxy stage with every proxy and
one training stage, so it inherits the drivers' storage and resume: a killed benchmark
continues where it stopped. The architectures' rows then go to
:func:`nasdet.report.proxy_benchmark.write_proxy_report`.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path
from typing import Any

import yaml

from nasdet.utils.io import atomic_write_text

# Every registered proxy except id_trained's heavier cousins can be listed here.
DEFAULT_PROXIES = ("id_sum", "id_mean", "id_util", "spectrum_entropy", "id_trained", "params",
                   "macs", "grad_norm", "snip", "synflow", "naswot", "zen", "maedet")


def write_benchmark_config(work_dir: Path, space: str | Path, *, num_archs: int, epochs: int,
                           proxies: list[str], num_images: int, seed: int,
                           cfg_options: dict[str, Any] | None) -> Path:
    """The search config the benchmark runs, kept in its work dir as a record."""
    data = {
        "space": str(Path(space).absolute()),
        "n_trials": num_archs,
        "seed": seed,
        "sampler": {"type": "random", "seed": seed},
        "pruner": {"type": "none"},
        "objectives": [{"metric": "ap50", "direction": "maximize"}],
        "stages": [{"type": "complexity"},
                   {"type": "proxy", "proxies": list(proxies), "num_images": num_images},
                   {"type": "train", "name": "budget", "epochs": epochs}],
    }
    if cfg_options:
        data["cfg_options"] = dict(cfg_options)
    return atomic_write_text(work_dir / "benchmark_search.yaml", yaml.safe_dump(data))


def run_proxy_benchmark(
    space: str | Path,
    work_dir: str | Path,
    *,
    num_archs: int,
    epochs: int,
    proxies: list[str] | None = None,
    num_images: int = 8,
    seed: int = 0,
    seed_repeats: int = 0,
    backend: str = "optuna",
    data_root: str | Path | None = None,
    cfg_options: dict[str, Any] | None = None,
    command: str = "",
) -> Path:
    """Run (or continue) the benchmark and write its report.

    Args:
        space: Search space YAML.
        work_dir: Study, trials and report.
        num_archs: Architectures to sample and train.
        epochs: Training budget per architecture.
        proxies: Proxy names (default :data:`DEFAULT_PROXIES`).
        num_images: Probe batch size of the proxies.
        seed: Sampler seed.
        seed_repeats: Also train the first finished architecture this many extra times
            with other seeds, to state the seed-to-seed AP noise.
        backend: ``optuna`` or ``ray`` (trainings as Ray Tune trials).
        data_root: Dataset root for every architecture.
        cfg_options: Overrides for every architecture's config.
        command: The command line, recorded in the report.

    Returns:
        Path of the report (``correlations.md``).
    """
    from nasdet.report.proxy_benchmark import write_proxy_report
    from nasdet.search.config import load_search_config
    from nasdet.search.run import run_search

    work_dir = Path(work_dir).absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    config_path = write_benchmark_config(
        work_dir, space, num_archs=num_archs, epochs=epochs,
        proxies=list(proxies or DEFAULT_PROXIES), num_images=num_images, seed=seed,
        cfg_options=cfg_options)
    resume = (work_dir / "study.db").is_file() or (work_dir / "ray_results").is_dir()
    result = run_search(config_path, work_dir, backend=backend, resume=resume,
                        study_name="proxy_benchmark", data_root=data_root)
    rows = [r for r in result["rows"] if r.get("state") in ("COMPLETE", "TERMINATED")]
    noise = None
    if seed_repeats and rows:
        noise = _seed_noise(load_search_config(config_path), rows[0], work_dir, seed_repeats,
                            data_root)
    atomic_write_text(work_dir / "architectures.json", json.dumps(rows, indent=1, default=str))
    return write_proxy_report(rows, work_dir / "report", noise=noise,
                              command=command or shlex.join(["tools/proxy_benchmark.py",
                                                             str(space)]))


def _seed_noise(config, row: dict[str, Any], work_dir: Path, repeats: int,
                data_root: str | Path | None) -> dict[str, Any]:
    """Retrain one architecture with other seeds (each run resumable by its directory).

    Returns:
        ``{"trial": n, "seeds": [...], "values": {target: [value per seed]}}``, the
        architecture's own trial first.
    """
    from optuna.trial import FixedTrial

    from nasdet.report.proxy_benchmark import TARGETS
    from nasdet.search.evaluator import TrialEvaluator

    evaluator = TrialEvaluator(config, data_root=data_root)
    params = {k.removeprefix("param/"): v for k, v in row.items() if k.startswith("param/")}
    candidate = evaluator.space.suggest(FixedTrial(params))
    # The architecture's own trial trained with its config's seed; the repeats add 1, 2...
    base_seed = int((evaluator.candidate_config(candidate).get("randomness") or {})
                    .get("seed") or 0)
    runs = [row]
    for extra in range(1, repeats + 1):
        trial_dir = work_dir / "seed_noise" / f"seed{extra}"
        done = trial_dir / "metrics.json"
        record = json.loads(done.read_text()) if done.is_file() else {}
        if record.get("stages_done") != len(config.stages):
            evaluator.cfg_options["randomness.seed"] = base_seed + extra
            record = {"metrics": evaluator.run(candidate, trial_dir, lambda *a: None)}
        runs.append(record["metrics"])
    return {"trial": row.get("trial"),
            "seeds": [base_seed + i for i in range(repeats + 1)],
            "values": {t: [float(r[t]) for r in runs] for t in TARGETS}}
