"""A synthetic benchmark table over real architectures of the tiny space (no training)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
SPACE = REPO / "search_spaces" / "tiny_synth_arch.yaml"


def make_rows(num_archs: int = 40, pairs: int = 20, epochs: int = 6, noise: float = 0.01,
              seed: int = 0) -> list[dict]:
    """Rows whose final AP grows with log #params, plus seed noise; curves rise to it.

    ``proxies``: ``oracle`` = the noiseless AP, ``anti`` = its negative, ``random``.
    """
    from nasdet.benchmark.build import sample_architectures
    from nasdet.space import SearchSpace

    rng = np.random.default_rng(seed)
    space = SearchSpace.from_yaml(SPACE)
    archs = sample_architectures(space, num_archs, 0)
    quality = rng.uniform(0.1, 0.4, num_archs)
    rows = []
    for arch, params in enumerate(archs):
        n_params = int(1e6 * (1 + 4 * quality[arch] + rng.uniform(0, 0.5)))
        for s in range(2 if arch < pairs else 1):
            final = quality[arch] + rng.normal(0, noise)
            curve = [final * (1 - 0.5 ** (e + 1)) for e in range(epochs)]
            rows.append({
                "arch_id": arch, "seed": s, "key": space.candidate(params).key,
                "params": params, "n_params": n_params, "macs": 100 * n_params + arch,
                "epochs": epochs, "ap": curve, "ap50": [1.5 * v for v in curve],
                "epoch_seconds": [10.0] * epochs, "epoch_cpu_seconds": [10.0] * epochs,
                "train_seconds": 10.0 * epochs, "train_cpu_seconds": 10.0 * epochs,
                "proxies": {"oracle": float(quality[arch]), "anti": float(-quality[arch]),
                            "random": float(rng.normal())},
                "proxy_seconds": {"oracle": 0.1, "anti": 0.1, "random": 0.1},
                "proxy_errors": {},
                "id": {"backbone.layer1": [10.0, 11.0] + [12.0] * (epochs - 1)},
                "id_per_width": {"backbone.layer1": [0.5, 0.55] + [0.6] * (epochs - 1)},
                "channels": {"backbone.layer1": 20}, "machine": {"cpu": "test"}})
    return rows


@pytest.fixture
def synthetic_table(tmp_path):
    """A benchmark directory of :func:`make_rows` rows; returns its path."""
    from nasdet.benchmark.table import assemble, write_row

    out = tmp_path / "bench"
    for row in make_rows():
        write_row(out, row)
    assemble(out, {"space": str(SPACE), "epochs": 6, "cfg_options": {}})
    return out
