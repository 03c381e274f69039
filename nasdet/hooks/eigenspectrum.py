"""Track the intrinsic dimensionality of selected layers while a detector trains.

Add it to any config (the config must import ``nasdet.hooks``, as nasdet's runtime
base does through ``custom_imports``)::

    custom_hooks = [dict(type='EigenspectrumHook', layers=['backbone_stages', 'fpn'],
                         interval=1, by_epoch=True, num_images=16)]

Outputs in the work dir: ``eigenspectrum_history.json`` (every measurement, the
dropping / rebounding flags and the units), ``eigenspectrum_dynamics.png`` (ID per
layer against the iteration), and the scalars ``id/<layer>`` and
``id_per_width/<layer>`` in the runner's visualizer (``vis_data/scalars.json``;
TensorBoard too when the config has a ``TensorboardVisBackend``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from nasdet.errors import NasdetError
from nasdet.spectrum import DEFAULT_REL_LAMBDA
from nasdet.utils.io import atomic_write_json

__all__ = ["HISTORY_FORMAT", "EigenspectrumHook", "classify_dynamics"]

#: Version tag of the history file.
HISTORY_FORMAT = "nasdet.eigenspectrum-history/1"


def classify_dynamics(
    values: Sequence[float], drop_threshold: float = 0.1, rebound_threshold: float = 0.05
) -> dict[str, Any]:
    """Classify a layer's ID trajectory as dropping and/or rebounding.

    With ``v_0`` the first value (the start of training), ``v_min`` the smallest value
    (its first occurrence at index ``i_min``) and ``v_last`` the latest value:

    * ``drop = (v_0 - v_min) / v_0``: the largest fall below the start, relative to the
      start (``>= 0``);
    * ``rebound = (v_last - v_min) / v_0``: how far the latest value has recovered from
      the minimum, relative to the start as well, so that ``drop`` and ``rebound`` are
      on the same scale (``rebound == drop`` means back at the start);
    * ``dropping``: ``drop > drop_threshold`` (the ID fell by more than that fraction
      of its start value at some point);
    * ``rebounding``: ``dropping`` and ``rebound > rebound_threshold`` (after its
      minimum the ID recovered by more than that fraction of its start value). A layer
      that never dropped does not rebound, however much it grows.

    A sequence with fewer than two values, or a start value ``<= 0`` (a dead layer),
    gives ``drop = rebound = 0`` and no flag.

    Args:
        values: ID values in training order.
        drop_threshold: Relative fall that makes a layer ``dropping``.
        rebound_threshold: Relative recovery that makes a dropping layer ``rebounding``.

    Returns:
        ``{"start", "min", "min_index", "last", "drop", "rebound", "dropping",
        "rebounding"}`` (``start``/``min``/``last`` are ``None`` for no values).

    Example:
        >>> d = classify_dynamics([40.0, 30.0, 35.0], drop_threshold=0.1, rebound_threshold=0.05)
        >>> d["drop"], d["rebound"], d["dropping"], d["rebounding"]
        (0.25, 0.125, True, True)
    """
    if drop_threshold < 0 or rebound_threshold < 0:
        raise NasdetError("thresholds must be >= 0", key="drop_threshold/rebound_threshold")
    vals = [float(v) for v in values]
    if not vals:
        return {"start": None, "min": None, "min_index": None, "last": None, "drop": 0.0,
                "rebound": 0.0, "dropping": False, "rebounding": False}
    start, last = vals[0], vals[-1]
    low = min(vals)
    i_min = vals.index(low)
    if len(vals) < 2 or start <= 0:
        drop = rebound = 0.0
    else:
        drop = (start - low) / start
        rebound = (last - low) / start
    dropping = drop > drop_threshold
    return {
        "start": start, "min": low, "min_index": i_min, "last": last,
        "drop": drop, "rebound": rebound,
        "dropping": dropping, "rebounding": dropping and rebound > rebound_threshold,
    }


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    from mmengine.model import is_model_wrapper

    return model.module if is_model_wrapper(model) else model


@HOOKS.register_module()
class EigenspectrumHook(Hook):
    """Measure the ID of selected layers on a fixed probe set during training.

    When: at ``before_train`` (the starting point; after a resume, the resumed
    iteration), every ``interval`` epochs (``by_epoch=True``, after the epoch) or
    iterations (``by_epoch=False``, after the iteration), and at ``after_train`` (if the
    last iteration was not measured yet). An iteration already in the history is never
    measured twice.

    How: the probe set is the first ``num_images`` images of ``split`` (``val``; or
    ``train`` through the test pipeline, so no random flip), batched by ``batch_size``
    and passed through the model's ``data_preprocessor`` once, at ``before_train``; the
    cached tensors are reused for every measurement (on the CPU, moved to the model's
    device per batch). Each measurement runs the model in eval mode without gradients
    (``extract_feat``, or ``predict`` when head layers are selected, see
    :mod:`nasdet.spectrum.detector`) and restores every module's train/eval flag after.
    Distributed: each process measures its share of the probe set (image ``i`` on rank
    ``i % world_size``), the covariance accumulators are all-reduced, and only rank 0
    writes.

    Records (``<work_dir>/<history_file>``, rewritten atomically after every
    measurement): ``entries`` with ``iteration`` (training iterations completed),
    ``epoch`` (epochs completed) and per layer ``id`` (Suzuki's degrees of freedom
    ``N(lambda)``, dimensions), ``id_per_width`` (``id / channels``), ``channels``,
    ``count`` (samples), ``participation_ratio`` and ``effective_rank`` (dimensions)
    and, with ``save_eigenvalues``, the eigenvalues (squared activation units);
    ``dynamics``: :func:`classify_dynamics` of each layer's ID so far. On resume the
    file is reloaded and extended; entries after the resumed iteration (from a run that
    was not continued) are dropped. A fresh run (iteration 0) starts a new history.

    Args:
        layers: Presets / full-match patterns of module names (see
            :func:`nasdet.spectrum.select_modules`).
        interval: Measure every ``interval`` epochs or iterations.
        by_epoch: Count ``interval`` in epochs (``True``) or iterations.
        num_images: Size of the probe set (fewer if the split is smaller).
        split: ``'val'`` (default), ``'test'`` or ``'train'``.
        batch_size: Images per forward of the probe set.
        stride: Keep every ``stride``-th spatial position per dim.
        max_positions: Keep at most this many random positions per image and layer.
        rel_lambda: ``lambda`` of ``N(lambda)`` relative to each layer's largest
            eigenvalue.
        lam: Absolute ``lambda`` (overrides ``rel_lambda``).
        drop_threshold: See :func:`classify_dynamics`.
        rebound_threshold: See :func:`classify_dynamics`.
        save_eigenvalues: Also store every eigenvalue in the history.
        history_file: History file name in the work dir.
        plot_file: Dynamics plot file name in the work dir (``None``: no plot).
        seed: Seed of the position subsets of ``max_positions``.
    """

    priority = "NORMAL"  # before LoggerHook and CheckpointHook

    def __init__(
        self,
        layers: str | Sequence[str] = ("backbone_stages", "fpn"),
        interval: int = 1,
        by_epoch: bool = True,
        num_images: int = 16,
        split: str = "val",
        batch_size: int = 1,
        stride: int = 1,
        max_positions: int | None = None,
        rel_lambda: float = DEFAULT_REL_LAMBDA,
        lam: float | None = None,
        drop_threshold: float = 0.1,
        rebound_threshold: float = 0.05,
        save_eigenvalues: bool = False,
        history_file: str = "eigenspectrum_history.json",
        plot_file: str | None = "eigenspectrum_dynamics.png",
        seed: int = 0,
    ):
        for key, value in (("interval", interval), ("num_images", num_images),
                           ("batch_size", batch_size), ("stride", stride)):
            if int(value) < 1:
                raise NasdetError(f"must be >= 1, got {value}", key=f"EigenspectrumHook.{key}")
        if drop_threshold < 0 or rebound_threshold < 0:
            raise NasdetError("thresholds must be >= 0",
                              key="EigenspectrumHook.drop_threshold/rebound_threshold")
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        self.interval = int(interval)
        self.by_epoch = bool(by_epoch)
        self.num_images = int(num_images)
        self.split = split
        self.batch_size = int(batch_size)
        self.stride = int(stride)
        self.max_positions = max_positions
        self.rel_lambda = float(rel_lambda)
        self.lam = lam
        self.drop_threshold = float(drop_threshold)
        self.rebound_threshold = float(rebound_threshold)
        self.save_eigenvalues = bool(save_eigenvalues)
        self.history_file = history_file
        self.plot_file = plot_file
        self.seed = int(seed)
        self.history: dict[str, Any] = {}
        self._cache: list[dict[str, Any]] = []
        self._measured: set[int] = set()
        self._full_forward = False
        self._probe_images = 0
        self._ready = False

    # ------------------------------------------------------------------ mmengine hooks
    def before_train(self, runner) -> None:
        """Cache the probe set, reload the history on resume, measure the start."""
        from mmengine.dist import broadcast_object_list, is_main_process

        from nasdet.spectrum.detector import needs_full_forward

        model = _unwrap(runner.model)
        try:
            self._full_forward = needs_full_forward(model, self.layers)
        except NasdetError as err:
            raise NasdetError(err.message, file=runner.cfg.filename, key=err.key) from None
        self._cache_probe_set(runner, model)
        known: list[int] = []
        if is_main_process():
            self.history = self._load_history(runner)
            known = [int(e["iteration"]) for e in self.history["entries"]]
        shared = [known]
        broadcast_object_list(shared)  # every rank takes the same measure/skip decisions
        self._measured = set(shared[0])
        self._measure(runner, iteration=runner.iter, epoch=runner.epoch, strict=True)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Any = None,
                         outputs: Any = None) -> None:
        """Measure every ``interval`` iterations (``by_epoch=False``)."""
        if not self.by_epoch and self.every_n_train_iters(runner, self.interval):
            self._measure(runner, iteration=runner.iter + 1, epoch=runner.epoch)

    def after_train_epoch(self, runner) -> None:
        """Measure every ``interval`` epochs (``by_epoch=True``)."""
        if self.by_epoch and self.every_n_epochs(runner, self.interval):
            self._measure(runner, iteration=runner.iter, epoch=runner.epoch + 1)

    def after_train(self, runner) -> None:
        """Measure the final weights if the last iteration was not measured."""
        self._measure(runner, iteration=runner.iter, epoch=runner.epoch)
        self._cache = []
        self._ready = False

    # ------------------------------------------------------------------ internals
    def _cache_probe_set(self, runner, model: torch.nn.Module) -> None:
        from mmengine.dist import get_dist_info

        from nasdet.spectrum.detector import build_probe_dataset, iter_probe_batches

        dataset = build_probe_dataset(runner.cfg, self.split)
        rank, world = get_dist_info()
        n = min(self.num_images, len(dataset))
        if n == 0:
            raise NasdetError(f"the {self.split} dataset is empty", file=runner.cfg.filename,
                              key="EigenspectrumHook.split")
        self._probe_images = n
        self._cache = []
        with torch.no_grad():
            for batch in iter_probe_batches(dataset, range(rank, n, world), self.batch_size):
                data = model.data_preprocessor(batch, False)
                samples = data.get("data_samples")
                self._cache.append({
                    "inputs": data["inputs"].cpu(),
                    "data_samples": None if samples is None else [
                        s.cpu() if hasattr(s, "cpu") else s for s in samples],
                })
        self._ready = True

    def _history_path(self, runner) -> Path:
        return Path(runner.work_dir) / self.history_file

    def _meta(self, runner) -> dict[str, Any]:
        from nasdet.spectrum.analysis import lambda_rule

        return {
            "config": runner.cfg.filename,
            "layers": self.layers,
            "split": self.split,
            "num_images": self._probe_images,
            "batch_size": self.batch_size,
            "stride": self.stride,
            "max_positions": self.max_positions,
            "forward": "model.predict (eval mode)" if self._full_forward
                       else "model.extract_feat (eval mode)",
            "lambda_rule": lambda_rule(self.rel_lambda, self.lam),
            "interval": self.interval,
            "by_epoch": self.by_epoch,
            "drop_threshold": self.drop_threshold,
            "rebound_threshold": self.rebound_threshold,
            "dynamics_rule": (
                "drop = (start - min) / start, rebound = (latest - min) / start; "
                "dropping: drop > drop_threshold; rebounding: dropping and "
                "rebound > rebound_threshold (see nasdet.hooks.classify_dynamics)"),
            "units": {
                "iteration": "training iterations completed when measured",
                "epoch": "training epochs completed when measured",
                "id": "Suzuki's degrees of freedom N(lambda) = sum_j mu_j / (mu_j + lambda) "
                      "of the channel covariance eigenvalues mu_j, dimensions",
                "id_per_width": "id / channels (fraction of the layer's width)",
                "channels": "layer width (count)",
                "count": "samples: probe images x spatial positions (count)",
                "participation_ratio": "(sum mu)^2 / sum mu^2, dimensions",
                "effective_rank": "exp(entropy of mu / sum mu), dimensions",
                "eigenvalues": "covariance eigenvalues, descending, squared activation "
                               "units (only with save_eigenvalues)",
            },
        }

    def _load_history(self, runner) -> dict[str, Any]:
        import json

        path = self._history_path(runner)
        fresh = {"format": HISTORY_FORMAT, "meta": self._meta(runner), "entries": [],
                 "dynamics": {}}
        if not path.is_file():
            return fresh
        if runner.iter == 0:
            runner.logger.warning(f"{path}: a fresh run (iteration 0) starts a new history; "
                                  "the previous one is replaced")
            return fresh
        try:
            old = json.loads(path.read_text(encoding="utf-8"))
            entries = list(old["entries"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise NasdetError(f"cannot reload the eigenspectrum history to resume: {exc}",
                              file=path) from None
        kept = [e for e in entries if int(e["iteration"]) <= runner.iter]
        if len(kept) < len(entries):
            runner.logger.warning(
                f"{path}: dropped {len(entries) - len(kept)} entries after iteration "
                f"{runner.iter}, the iteration this run resumes from")
        fresh["entries"] = kept
        return fresh

    def _measure(self, runner, *, iteration: int, epoch: int, strict: bool = False) -> None:
        from mmengine.dist import is_main_process

        from nasdet.spectrum.detector import measure_spectra

        if not self._ready or iteration in self._measured:
            return
        self._measured.add(iteration)
        try:
            spectra = measure_spectra(
                _unwrap(runner.model), self._cache, layers=self.layers, preprocessed=True,
                full_forward=self._full_forward, stride=self.stride,
                max_positions=self.max_positions, seed=self.seed,
                rel_lambda=self.rel_lambda, lam=self.lam, file=runner.cfg.filename)
        except NasdetError as err:
            if strict:  # a bad layer selection: fail before training starts
                raise
            runner.logger.warning(f"EigenspectrumHook: no measurement at iteration "
                                  f"{iteration}: {err}")
            return
        if not is_main_process():
            return
        layers: dict[str, Any] = {}
        for name, s in spectra.items():
            rec = {
                "id": s.measures["id_dof"],
                "id_per_width": s.measures["id_per_width"],
                "channels": s.channels,
                "count": s.count,
                "participation_ratio": s.measures["participation_ratio"],
                "effective_rank": s.measures["effective_rank"],
            }
            if self.save_eigenvalues:
                rec["eigenvalues"] = s.eigenvalues.tolist()
            layers[name] = rec
        self.history["entries"].append(
            {"iteration": int(iteration), "epoch": int(epoch), "layers": layers})
        self.history["entries"].sort(key=lambda e: e["iteration"])
        self.history["meta"] = self._meta(runner)
        self.history["dynamics"] = self._dynamics()
        path = atomic_write_json(self._history_path(runner), self.history)
        if self.plot_file:
            from nasdet.report.spectrum_report import plot_id_dynamics

            plot_id_dynamics(self.history, path.parent / self.plot_file)
        scalars = {f"id/{name}": rec["id"] for name, rec in layers.items()}
        scalars.update({f"id_per_width/{name}": rec["id_per_width"]
                        for name, rec in layers.items()})
        runner.visualizer.add_scalars(scalars, step=int(iteration))

    def _dynamics(self) -> dict[str, dict[str, Any]]:
        names: list[str] = []
        for entry in self.history["entries"]:
            names += [n for n in entry["layers"] if n not in names]
        out = {}
        for name in names:
            values = [e["layers"][name]["id"] for e in self.history["entries"]
                      if name in e["layers"]]
            out[name] = classify_dynamics(values, self.drop_threshold, self.rebound_threshold)
        return out
