"""The proxy benchmark end to end: sample, score, train, retrain one for seed noise, resume."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml

from nasdet.search.proxy_benchmark import run_proxy_benchmark
from tests.conftest import CONFIGS, REPO

FAST = {  # every architecture: 64-px images, 2-image batches, 4 training images
    "train_dataloader.batch_size": 2,
    "val_dataloader.batch_size": 4,
    "train_dataloader.dataset.indices": 4,
    "param_scheduler": [],
}


@pytest.fixture()
def arch_space(tmp_path: Path) -> Path:
    data = yaml.safe_load((REPO / "search_spaces/tiny_synth_arch.yaml").read_text())
    data["base"] = str(CONFIGS / "tiny_faster_rcnn_synth.py")
    path = tmp_path / "tiny_synth_arch.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _bench(space: Path, work: Path, root: Path, *, num_archs: int, seed_repeats: int) -> Path:
    return run_proxy_benchmark(space, work, num_archs=num_archs, epochs=1,
                               proxies=["id_mean", "params", "naswot"], num_images=2,
                               seed_repeats=seed_repeats, data_root=root, cfg_options=FAST,
                               command="bench")


def _mtimes(work: Path) -> dict[str, int]:
    return {str(p.relative_to(work)): p.stat().st_mtime_ns
            for p in work.glob("*/*/metrics.json")}  # trials/NNNN/, seed_noise/seedK/


def test_benchmark_continues_where_it_stopped_and_states_seed_noise(tmp_path, tiny_det_root,
                                                                    arch_space):
    work = tmp_path / "bench"
    _bench(arch_space, work, tiny_det_root, num_archs=2, seed_repeats=0)
    first = _mtimes(work)
    assert len(first) == 2 and not (work / "seed_noise").exists()

    # A larger request on the same work dir trains only what is missing.
    report = _bench(arch_space, work, tiny_det_root, num_archs=3, seed_repeats=1)
    after = _mtimes(work)
    assert {k: after[k] for k in first} == first
    assert len(after) == 4 and "seed_noise/seed1/metrics.json" in after
    study = optuna.load_study(study_name="proxy_benchmark",
                              storage=f"sqlite:///{work / 'study.db'}")
    assert len(study.trials) == 3

    rows = json.loads((work / "architectures.json").read_text())
    assert len(rows) == 3
    for r in rows:
        assert r["proxy/params"] > 0 and r["proxy/id_mean"] > 0 and 0 <= r["ap"] <= r["ap50"] <= 1
    data = json.loads((report.parent / "correlations.json").read_text())
    assert data["n_architectures"] == 3 and data["command"] == "bench"
    noise_metrics = json.loads((work / "seed_noise/seed1/metrics.json").read_text())["metrics"]
    for target in ("ap", "ap50"):
        section = data["targets"][target]
        assert {r["proxy"] for r in section["correlations"]} <= {"id_mean", "params", "naswot"}
        # The noise is the first architecture's own value, then its retrained value.
        assert section["seed_noise"]["values"] == [rows[0][target], noise_metrics[target]]
    # The retrained architecture is the first one: same params, another seed.
    cfg_text = (work / "seed_noise/seed1/candidate.py").read_text()
    assert cfg_text == (Path(rows[0]["trial_dir"]) / "candidate.py").read_text()
    assert "proxies vs ap" in report.read_text()

    # Nothing left to do: a third call only rewrites the report.
    _bench(arch_space, work, tiny_det_root, num_archs=3, seed_repeats=1)
    assert _mtimes(work) == after


@pytest.mark.slow
def test_benchmark_trains_through_the_ray_backend(tmp_path, tiny_det_root, arch_space):
    import ray

    report = run_proxy_benchmark(arch_space, tmp_path / "bench", num_archs=2, epochs=1,
                                 proxies=["params", "naswot"], num_images=2, seed_repeats=1,
                                 backend="ray", data_root=tiny_det_root,
                                 cfg_options={**FAST, "synthetic_data": None})
    assert not ray.is_initialized()
    rows = json.loads((tmp_path / "bench/architectures.json").read_text())
    assert len(rows) == 2 and all(r["proxy/params"] > 0 and "ap" in r for r in rows)
    data = json.loads((report.parent / "correlations.json").read_text())
    assert len(data["targets"]["ap50"]["seed_noise"]["values"]) == 2
    assert (tmp_path / "bench/ray_results").is_dir()
