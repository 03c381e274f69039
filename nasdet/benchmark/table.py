"""The tabular detection-NAS benchmark: its on-disk format and the loader.

A benchmark directory holds one JSON file per trained (architecture, seed) under
``rows/`` — the source of truth, written atomically as each training ends, so any
number of workers and any later machine extend the same table — and, assembled from
them, ``table.json`` (every row, whole) and ``table.csv`` (one flat line per row).
``meta.json`` names the format version, the space, the budget and the data.

Row fields (units in :data:`UNITS`)::

    arch_id, seed, key, params{name: value}, n_params, macs, epochs,
    ap[epoch], ap50[epoch]            COCO box AP after each epoch (index 0 = epoch 1)
    train_seconds, train_cpu_seconds  the whole budget's training iterations
    epoch_seconds[epoch], epoch_cpu_seconds[epoch]
    proxies{name: value}, proxy_seconds{name: s}, proxy_errors{name: why}
    id{layer: [ID after epoch 0 (init), 1, ..., epochs]}, id_per_width{...}, channels{layer}
    machine{cpu, torch_threads, torch}
    origin, source_arch, source_seed, proposal_epoch   only on rows of ID-guided proposals
                                      (``origin: id_guided``; the rest are sampled)

Load it with :func:`load_benchmark`. A table continued on several machines mixes their
CPU speeds; :meth:`Benchmark.epoch_costs` puts every row's seconds on one machine's scale
(:func:`machine_scales`) so a replayed search does not favour what a fast CPU trained.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nasdet.errors import NasdetError
from nasdet.utils.io import atomic_write_json, atomic_write_text

#: Version tag of rows, table and meta; bumped when a field changes meaning.
FORMAT = "nasdet.detection-benchmark/1"

UNITS = {
    "ap": "COCO box AP (pycocotools, IoU 0.50:0.95) on the validation split after each "
          "epoch, a fraction in [0, 1]",
    "ap50": "COCO box AP at IoU 0.5 after each epoch, a fraction in [0, 1]",
    "n_params": "parameters of the detector (count)",
    "macs": "multiply-accumulates of one forward at the space's input size (count)",
    "train_seconds": "wall-clock seconds of the training iterations (validation and "
                     "spectrum measurements excluded)",
    "train_cpu_seconds": "CPU seconds of the training process over the same iterations "
                         "(the cost measure: independent of other jobs on the machine)",
    "proxies": "each proxy's score at initialisation (see nasdet.proxies for its unit)",
    "proxy_seconds": "wall-clock seconds to compute each proxy",
    "id": "Suzuki's degrees of freedom N(lambda), lambda = 1e-3 x the layer's largest "
          "eigenvalue, of each backbone stage / FPN level on 16 training images; "
          "index 0 = at initialisation, index e = after epoch e (dimensions)",
    "id_per_width": "id / channels",
}


def machine_of(row: dict[str, Any]) -> str:
    """The CPU a row was trained on: its name, with its family/model/stepping where the
    row records them (``unknown`` for rows that say nothing)."""
    machine = row.get("machine") or {}
    name = str(machine.get("cpu") or "unknown")
    return f"{name} ({machine['cpu_id']})" if machine.get("cpu_id") else name


def machine_scales(rows: Sequence[dict[str, Any]]) -> dict[str, float]:
    """Factor per machine that puts its CPU seconds on the reference machine's scale.

    The reference is the machine with the most rows. Training cost follows the
    architecture, so log(train CPU seconds) is fitted by least squares on log MACs,
    log #params and one offset per other machine; a machine's factor is exp(-offset):
    the seconds the reference would have taken per second it took. Architectures are
    drawn at random for every machine, so the offsets compare like with like.

    Returns 1.0 for every machine while the reference has too few rows to fit the
    architecture terms (fewer than 4).
    """
    names = [machine_of(r) for r in rows]
    counts = {m: names.count(m) for m in dict.fromkeys(names)}
    if not counts:
        return {}
    ref = max(counts, key=lambda m: (counts[m], m))
    others = [m for m in counts if m != ref]
    if not others or counts[ref] < 4:
        return dict.fromkeys(counts, 1.0)
    X = np.array([[1.0, math.log(float(r["macs"])), math.log(float(r["n_params"]))]
                  + [float(name == m) for m in others] for r, name in zip(rows, names, strict=True)])
    y = np.log([float(r["train_cpu_seconds"]) for r in rows])
    coef = np.linalg.lstsq(X, y, rcond=None)[0]
    return {ref: 1.0, **{m: float(math.exp(-c)) for m, c in zip(others, coef[3:], strict=True)}}


def row_name(arch_id: int, seed: int) -> str:
    """File stem of a row: ``a007_s1``."""
    return f"a{int(arch_id):03d}_s{int(seed)}"


@dataclass
class Benchmark:
    """A loaded benchmark table.

    Attributes:
        rows: One dict per trained (architecture, seed), sorted by ``(arch_id, seed)``.
        meta: The table's ``meta.json``.
        path: The benchmark directory.
    """

    rows: list[dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None
    _scales: dict[str, float] | None = field(default=None, init=False, repr=False)

    @property
    def epochs(self) -> int:
        """The shortest complete AP curve of the table (its usable budget)."""
        return min((len(r["ap"]) for r in self.rows), default=0)

    @property
    def machine_scales(self) -> dict[str, float]:
        """:func:`machine_scales` of the table's rows, fitted once."""
        if self._scales is None:
            self._scales = machine_scales(self.rows)
        return self._scales

    def epoch_costs(self, row: dict[str, Any]) -> list[float]:
        """A row's CPU seconds per epoch on the reference machine's scale (see
        :func:`machine_scales`): the cost measure of replays across machines."""
        scale = self.machine_scales.get(machine_of(row), 1.0)
        return [float(s) * scale for s in row["epoch_cpu_seconds"]]

    def sampled(self) -> Benchmark:
        """The table without its proposal rows (``origin`` other than ``sampled``, see
        :mod:`nasdet.benchmark.proposals`): the random population statistics describe."""
        return Benchmark([r for r in self.rows if r.get("origin", "sampled") == "sampled"],
                         self.meta, self.path)

    def first_seed(self) -> list[dict[str, Any]]:
        """One row per architecture: the one with its lowest seed."""
        best: dict[int, dict[str, Any]] = {}
        for row in self.rows:
            if row["arch_id"] not in best or row["seed"] < best[row["arch_id"]]["seed"]:
                best[row["arch_id"]] = row
        return [best[a] for a in sorted(best)]

    def seed_pairs(self) -> list[tuple[dict[str, Any], dict[str, Any]]]:
        """``(first seed, second seed)`` rows of every architecture trained twice or more."""
        by_arch: dict[int, list[dict[str, Any]]] = {}
        for row in self.rows:
            by_arch.setdefault(row["arch_id"], []).append(row)
        pairs = []
        for arch in sorted(by_arch):
            runs = sorted(by_arch[arch], key=lambda r: r["seed"])
            if len(runs) >= 2:
                pairs.append((runs[0], runs[1]))
        return pairs

    def target(self, rows: Sequence[dict[str, Any]], metric: str = "ap",
               epoch: int | None = None) -> list[float]:
        """``metric`` after ``epoch`` (1-based; default: the last) for each row."""
        e = self.epochs if epoch is None else int(epoch)
        if not 1 <= e <= self.epochs:
            raise NasdetError(f"epoch {e} is outside the table's 1..{self.epochs}",
                              file=self.path, key="epoch")
        return [float(r[metric][e - 1]) for r in rows]


def read_row(path: str | Path) -> dict[str, Any]:
    """One row file, checked for its format."""
    try:
        row = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NasdetError(f"not a readable benchmark row: {exc}", file=path) from None
    if not isinstance(row, dict) or row.get("format") != FORMAT:
        got = row.get("format") if isinstance(row, dict) else type(row).__name__
        raise NasdetError(f"benchmark row of format {got!r}, expected {FORMAT!r}", file=path,
                          key="format")
    return row


def write_row(directory: str | Path, row: dict[str, Any]) -> Path:
    """Atomically write one row under ``<directory>/rows/``."""
    row = {"format": FORMAT, **row}
    return atomic_write_json(Path(directory) / "rows" / f"{row_name(row['arch_id'], row['seed'])}.json",
                             row, indent=1)


def load_benchmark(path: str | Path) -> Benchmark:
    """Load a benchmark directory (its ``rows/``), or a ``table.json`` file.

    Args:
        path: The benchmark directory or its ``table.json``.

    Returns:
        The :class:`Benchmark`.

    Raises:
        NasdetError: a missing path, a file of another format.

    Example:
        >>> bench = load_benchmark('docs/benchmark/tiny_synth_arch')  # doctest: +SKIP
        >>> tau = kendall(bench.target(bench.first_seed()), ...)       # doctest: +SKIP
    """
    path = Path(path)
    if path.is_file():
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise NasdetError(f"not a readable benchmark table: {exc}", file=path) from None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise NasdetError(f"not a benchmark table of format {FORMAT!r}", file=path,
                              key="format")
        rows, meta, root = list(data["rows"]), dict(data.get("meta") or {}), path.parent
    elif path.is_dir():
        rows = [read_row(p) for p in sorted((path / "rows").glob("*.json"))]
        meta_file = path / "meta.json"
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        root = path
    else:
        raise NasdetError("benchmark not found", file=path)
    rows.sort(key=lambda r: (int(r["arch_id"]), int(r["seed"])))
    return Benchmark(rows=rows, meta=meta, path=root)


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    """The CSV view of a row: scalars only, lists spread over ``..._eNN`` columns."""
    out: dict[str, Any] = {"arch_id": row["arch_id"], "seed": row["seed"], "key": row["key"],
                           "n_params": row["n_params"], "macs": row["macs"],
                           "epochs": row["epochs"], "train_seconds": row["train_seconds"],
                           "train_cpu_seconds": row["train_cpu_seconds"]}
    out.update({f"param/{k}": v for k, v in sorted(row["params"].items())})
    for metric in ("ap", "ap50"):
        out.update({f"{metric}_e{i + 1:02d}": v for i, v in enumerate(row[metric])})
    out.update({f"proxy/{k}": v for k, v in sorted(row.get("proxies", {}).items())})
    for layer, values in sorted(row.get("id", {}).items()):
        out[f"id_init/{layer}"] = values[0]
        out[f"id_e01/{layer}"] = values[1] if len(values) > 1 else None
        out[f"id_final/{layer}"] = values[-1]
    return out


def _csv_text(rows: Iterable[dict[str, Any]]) -> str:
    flat = [flat_row(r) for r in rows]
    columns: list[str] = []
    for f in flat:
        columns += [c for c in f if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for f in flat:
        writer.writerow({k: ("" if v is None else
                             (f"{v:.6g}" if isinstance(v, float) else
                              (json.dumps(v) if isinstance(v, (list, dict)) else v)))
                         for k, v in f.items()})
    return buf.getvalue()


def assemble(directory: str | Path, meta: dict[str, Any] | None = None) -> Benchmark:
    """Rewrite ``table.json``, ``table.csv`` (and ``meta.json``) from ``rows/``."""
    directory = Path(directory)
    if meta is not None:
        atomic_write_json(directory / "meta.json", {"format": FORMAT, **meta, "units": UNITS})
    bench = load_benchmark(directory)
    atomic_write_json(directory / "table.json",
                      {"format": FORMAT, "meta": bench.meta, "rows": bench.rows}, indent=None)
    atomic_write_text(directory / "table.csv", _csv_text(bench.rows))
    return bench
