"""One trial: fidelity stages in order, each reporting as it finishes.

The evaluator knows nothing of Optuna or Ray. A driver passes a ``report`` callback;
the callback may raise (e.g. ``optuna.TrialPruned``) to stop a trial between stages.
An ``epoch_report`` callback is called after every epoch of the train stages with
``report_every_epoch`` (through :class:`~nasdet.hooks.TrialReportHook`, which those
stages add to the Runner); what it raises leaves the Runner and the trial as is.
Every trial writes under its own absolute directory::

    <trial_dir>/candidate.py     standalone config (tools/train.py retrains it)
    <trial_dir>/params.json      the sampled parameters
    <trial_dir>/metrics.json     every metric so far, rewritten after each stage
                                 (``proxy_error/<name>``: why a proxy failed here)
    <trial_dir>/spectrum.json    per-layer eigenvalues and ID measures (proxy stage)
    <trial_dir>/train/           mmengine work dir of the train stages (a checkpoint
                                 after every epoch, the last two kept, so a trial cut
                                 off mid-stage continues from its last epoch)
    <trial_dir>/id_widths.json   with ``id_guided``: the widths the trained model's
                                 stage ID proposes, or why there is no proposal
                                 (see :meth:`TrialEvaluator.propose_widths`)

A retried trial (``run(..., resume=True)`` on the directory of the run that was cut
off) skips the stages ``metrics.json`` records as done and continues a train stage from
its last epoch checkpoint (``train(resume="auto")``). Checkpoints are removed when the
trial ends (it finished, was pruned or rejected, or raised), never when its process is
interrupted (``KeyboardInterrupt``, ``SystemExit``, a kill): it may be retried.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from nasdet.errors import NasdetError
from nasdet.search.config import SearchConfig, Stage
from nasdet.utils.io import atomic_write_json

ReportFn = Callable[[Stage, int, dict[str, float]], None]
#: ``epoch_report(stage, stage index, epoch, metrics so far)``, after each validation
#: epoch of a train stage with ``report_every_epoch`` (epoch: epochs trained so far).
EpochReportFn = Callable[[Stage, int, int, dict[str, float]], None]
#: ``on_checkpoint(stage, stage index, epoch, checkpoint file)``, after every training
#: epoch of a train stage (the file is the trial's latest epoch checkpoint).
CheckpointFn = Callable[[Stage, int, int, Path], None]
#: ``train_stage(stage config, stage, trial dir)`` -> the last validation metrics.
TrainStageFn = Callable[[Any, Stage, Path], dict[str, Any]]
#: Where a trial records its metrics and how many stages are done.
METRICS_FILE = "metrics.json"

# Layers whose spectra a trial records: backbone stages and FPN levels.
SPECTRUM_LAYERS = ("backbone_stages", "fpn")

#: Where a trial writes its ID-guided proposal, and the format tag inside.
ID_WIDTHS_FILE = "id_widths.json"
ID_WIDTHS_FORMAT = "nasdet.id-widths/1"
#: The EigenspectrumHook history in the train stages' work dir.
ID_HISTORY_FILE = "eigenspectrum_history.json"


class CandidateRejected(Exception):
    """A candidate that breaks the space's constraints (not an error of the search)."""


class TrialEvaluator:
    """Run the stages of a search config on candidates of its space.

    Args:
        config: The validated search config.
        keep_checkpoints: Keep each trial's training checkpoints (otherwise removed
            when the trial ends, keeping disk use flat over long searches).
        data_root: Dataset root for every candidate (default: the base config's),
            made absolute so trials never depend on their working directory.
        cfg_options: ``key.sub=value`` overrides applied to every candidate's config.
        train_stage: Runs a train stage's config instead of
            ``nasdet.train.train(cfg, resume="auto")`` (``train_stage(cfg, stage,
            trial_dir)`` -> the last validation metrics; e.g. on Ray Train workers).

    Example:
        >>> from nasdet.search import load_search_config, TrialEvaluator
        >>> cfg = load_search_config('configs/search/tiny_synth.yaml')  # doctest: +SKIP
        >>> evaluator = TrialEvaluator(cfg)  # doctest: +SKIP
    """

    def __init__(self, config: SearchConfig, *, keep_checkpoints: bool = False,
                 data_root: str | Path | None = None,
                 cfg_options: dict[str, Any] | None = None,
                 train_stage: TrainStageFn | None = None):
        from nasdet.space import SearchSpace

        self.config = config
        self.space = SearchSpace.from_yaml(config.space_path)
        self.keep_checkpoints = keep_checkpoints
        self.data_root = Path(data_root).absolute() if data_root else None
        self.cfg_options = {**config.cfg_options, **(cfg_options or {})}
        self.train_stage = train_stage

    # -- the trial ------------------------------------------------------------------
    def run(self, candidate: Any, trial_dir: str | Path, report: ReportFn, *,
            epoch_report: EpochReportFn | None = None, resume: bool = False,
            restored: ReportFn | None = None,
            on_checkpoint: CheckpointFn | None = None) -> dict[str, float]:
        """Evaluate ``candidate`` stage by stage.

        Args:
            candidate: A :class:`nasdet.space.Candidate` of this evaluator's space.
            trial_dir: The trial's own directory (made absolute).
            report: Called after each stage with (stage, stage index, all metrics so far).
            epoch_report: Called after each validation epoch of the train stages with
                ``report_every_epoch`` (those stages validate every epoch only then).
            resume: Continue the run ``trial_dir`` holds (a retried trial): the stages
                its ``metrics.json`` records as done for these params are not run again
                (``restored``, not ``report``, is called for them) and a train stage
                continues from its last epoch checkpoint.
            restored: Called instead of ``report`` for each stage taken from the record.
            on_checkpoint: Called after each training epoch with its checkpoint.

        Returns:
            All metrics of the trial (see :mod:`nasdet.search.config`).

        Raises:
            CandidateRejected: the candidate is over the space's budget.
        """
        trial_dir = Path(trial_dir).absolute()
        trial_dir.mkdir(parents=True, exist_ok=True)
        cfg = self.candidate_config(candidate)
        done, metrics = recorded_stages(trial_dir, dict(candidate.params)) if resume \
            else (0, {})
        candidate.dump(trial_dir / "candidate.py")
        atomic_write_json(trial_dir / "params.json", dict(candidate.params))
        guided = self.config.id_guided
        try:
            for index, stage in enumerate(self.config.stages):
                if index < done:  # finished before the run was cut off
                    if restored is not None:
                        restored(stage, index, metrics)
                    continue
                start = time.perf_counter()
                if stage.type == "complexity":
                    metrics.update(self._complexity(candidate))
                elif stage.type == "proxy":
                    metrics.update(self._proxies(cfg, stage, trial_dir))
                else:
                    on_epoch = None
                    if epoch_report is not None and stage.options.get("report_every_epoch"):
                        def on_epoch(epoch: int, found: dict[str, float], stage=stage,
                                     index=index) -> None:
                            epoch_report(stage, index, epoch,
                                         {**metrics, **_ap_metrics(stage, found, epoch)})
                    on_saved = None
                    if on_checkpoint is not None:
                        def on_saved(epoch: int, path: Path, stage=stage, index=index) -> None:
                            on_checkpoint(stage, index, epoch, path)
                    metrics.update(self._train(cfg, stage, trial_dir, on_epoch, on_saved))
                metrics[f"seconds/{stage.name}"] = time.perf_counter() - start
                if guided and stage.name == guided["after"]:
                    start = time.perf_counter()
                    record = self.propose_widths(candidate, trial_dir)
                    metrics["id_guided/proposed"] = float(record["proposed"])
                    metrics["seconds/id_guided"] = time.perf_counter() - start
                atomic_write_json(trial_dir / METRICS_FILE, {
                    "metrics": metrics, "stages_done": index + 1,
                    "units": "ap/ap50: COCO bbox AP as fractions; macs/params: counts; "
                             "seconds/*: wall-clock seconds of the stage"})
                report(stage, index, metrics)
        except Exception:  # the trial ends here (pruned, rejected, raised)
            self.remove_checkpoints(trial_dir)
            raise
        # KeyboardInterrupt, SystemExit: the trial is cut off and may be retried.
        self.remove_checkpoints(trial_dir)
        return metrics

    def remove_checkpoints(self, trial_dir: str | Path) -> None:
        """Remove a trial's training checkpoints (unless ``keep_checkpoints``)."""
        if self.keep_checkpoints:
            return
        train = Path(trial_dir) / "train"
        for ckpt in train.glob("*.pth"):
            ckpt.unlink(missing_ok=True)
        (train / "last_checkpoint").unlink(missing_ok=True)

    def candidate_config(self, candidate: Any):
        """The candidate's full mmengine config, data root made absolute."""
        from nasdet.data.roots import set_data_root
        from nasdet.train.config import merge_cfg_options

        cfg = candidate.to_config()
        if self.cfg_options:  # model.backbone... reaches model.detector.backbone... too
            merge_cfg_options(cfg, self.cfg_options)
        if self.data_root:  # the user's data: nothing to generate
            cfg.pop("synthetic_data", None)
        root = self.data_root or Path(str(cfg.get("data_root", "data"))).absolute()
        set_data_root(cfg, root)
        return cfg

    # -- stages ---------------------------------------------------------------------
    def _complexity(self, candidate: Any) -> dict[str, float]:
        cost = self.space.complexity(candidate)
        ok, reason = self.space.check_constraints(candidate)
        if not ok:
            raise CandidateRejected(reason)
        return {"params": float(cost["params"]), "macs": float(cost["macs"])}

    def _proxies(self, cfg, stage: Stage, trial_dir: Path) -> dict[str, float]:
        from nasdet.models.utils.build import build_detector
        from nasdet.proxies import MMDetAdapter, compute_proxies
        from nasdet.spectrum import SpectrumProbe

        model = build_detector(cfg)
        batch = probe_batch(cfg, stage.options["num_images"])
        adapter = MMDetAdapter(model, batch)
        results = compute_proxies(model, adapter, stage.options["proxies"])
        out: dict[str, Any] = {}
        for r in results:
            out[f"seconds/proxy/{r.name}"] = r.seconds
            if r.ok:
                out[f"proxy/{r.name}"] = float(r.value)
            else:  # recorded for this candidate; the trial goes on
                out[f"proxy_error/{r.name}"] = r.error
        model.eval()
        with torch.no_grad(), SpectrumProbe(model, list(SPECTRUM_LAYERS)) as probe:
            model.extract_feat(adapter.inputs())
        atomic_write_json(trial_dir / "spectrum.json", {
            "layers": {name: s.to_dict() for name, s in probe.results().items()},
            "num_images": stage.options["num_images"],
            "units": "eigenvalues of the channel covariance of each feature map "
                     "(samples = images x positions, at initialisation)"})
        return out

    def _train(self, cfg, stage: Stage, trial_dir: Path,
               on_epoch: Callable[[int, dict[str, float]], None] | None = None,
               on_saved: Callable[[int, Path], None] | None = None,
               ) -> dict[str, float]:
        import contextlib
        import copy

        from nasdet.hooks.trial_report import trial_reporter
        from nasdet.train import train
        from nasdet.train.config import merge_cfg_options
        from nasdet.transfer import set_training_length

        cfg = copy.deepcopy(cfg)  # Config.copy() is shallow: stages must not share train_cfg
        cfg.work_dir = str(trial_dir / "train")
        # The stage's epochs are the base recipe's: the candidate's strategy scales them
        # (scratch: schedule_factor) and the LR schedule is rescaled with them.
        epochs = set_training_length(cfg, stage.options["epochs"])
        # Validation once at the stage's end, or after every epoch for per-epoch reports.
        cfg.train_cfg.val_interval = 1 if on_epoch is not None else epochs
        # A checkpoint after every epoch: a trial cut off mid-stage continues from its last
        # epoch. Two are kept: mmengine removes the oldest before it writes the next, and
        # the previous one must survive a kill while the next is written.
        cfg.default_hooks.checkpoint.interval = 1
        cfg.default_hooks.checkpoint.max_keep_ckpts = -1 if self.keep_checkpoints else 2
        cfg.default_hooks.checkpoint.save_best = None
        cfg.default_hooks.logger.interval = 50
        cfg.log_level = "WARNING"  # the trial's own log file keeps nothing; progress is per trial
        # The user's options win over the rescaled schedule: the search's, then the stage's.
        for options in (self.cfg_options, stage.options.get("cfg_options")):
            if options:
                merge_cfg_options(cfg, options)
        guided = self.config.id_guided
        if guided and stage.name == guided["after"]:
            # Measured once more after the stage's last epoch: the trained model's ID.
            cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(
                type="EigenspectrumHook", layers=["backbone_stages"],
                interval=epochs, num_images=guided["num_images"],
                history_file=ID_HISTORY_FILE, plot_file=None)]
        reporting: Any = contextlib.nullcontext()
        seen: dict[int, dict[str, float]] = {}
        if on_epoch is not None or on_saved is not None:
            def remember(epoch: int, found: dict[str, float]) -> None:
                seen[epoch] = found  # the stage's result is what its last epoch reported
                if on_epoch is not None:
                    on_epoch(epoch, found)

            cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="TrialReportHook")]
            reporting = trial_reporter(remember if on_epoch is not None else None,
                                       saved=on_saved)
        # A later train stage continues the same run from the previous stage's end.
        with reporting:
            metrics = self.train_stage(cfg, stage, trial_dir) if self.train_stage else \
                train(cfg, resume="auto")
        if seen:
            metrics = seen[max(seen)]
        # The epochs run so far: the user's options may have changed the stage's length.
        return _ap_metrics(stage, metrics, int(cfg.train_cfg.get("max_epochs", epochs)))


    # -- ID-guided widths -----------------------------------------------------------
    def propose_widths(self, candidate: Any, trial_dir: str | Path) -> dict[str, Any]:
        """Widths proportional to the trained candidate's stage ID; ``id_widths.json``.

        Reads the last entry of ``<trial_dir>/train/eigenspectrum_history.json`` (written
        by the ``after`` stage's hook) and replaces the ``dimension`` entries of the
        candidate's params with :func:`nasdet.space.derive_widths.propose_widths` on the
        dimension's per-stage values. The cost of a width tuple is the space's
        complexity (``metric``) of the candidate with those widths, infinite where the
        space's constraints reject it (both grow with every width, as bisection needs);
        the budget is ``budget`` x the candidate's own cost.

        Never raises for a proposal that cannot be made: the record says why.

        Args:
            candidate: The trial's candidate.
            trial_dir: The trial's directory.

        Returns:
            The record written to ``<trial_dir>/id_widths.json``: ``proposed`` (a new
            candidate to run), ``reason`` (why not, else None), ``dimension``,
            ``metric``, ``budget``, ``source_params``, ``source_key``, ``source_cost``,
            ``stage_layers``, ``stage_ids``, ``old_widths``, ``widths``, ``params`` (the
            proposed candidate's params, None without a proposal), ``key``, ``cost``,
            ``budget_cost``, ``cost_ratio``, ``scale``, ``saturated``, ``evaluations``
            (the file adds ``units``).
        """
        from nasdet.space.derive_widths import propose_candidate, read_stage_ids

        guided = self.config.id_guided or {}
        trial_dir = Path(trial_dir).absolute()
        space = self.space
        dim = next(d for d in space.dimensions if d.name == guided["dimension"])
        metric = guided["metric"]
        record: dict[str, Any] = {
            "format": ID_WIDTHS_FORMAT, "proposed": False, "reason": None,
            "dimension": dim.name, "metric": metric, "budget": guided["budget"],
            "source_params": dict(candidate.params), "source_key": candidate.key,
            "history": str(trial_dir / "train" / ID_HISTORY_FILE), "params": None,
        }
        units = {"stage_ids": "Suzuki's N(lambda) of each stage output at the end of the "
                              "measured train stage, dimensions",
                 "cost": f"{metric} of the whole detector (count)",
                 "cost_ratio": "proposal's cost / source trial's cost",
                 "scale": "channels per ID dimension (w_i ~ scale * ID_i)"}
        try:
            if not all(p in candidate.params for p in dim.params):
                raise NasdetError(f"the dimension {dim.name!r} is inactive for this candidate")
            old = [int(candidate.params[p]) for p in dim.params]
            layers, ids, channels = read_stage_ids(record["history"])
            record.update(stage_layers=layers, stage_ids=ids, old_widths=old)
            epochs = next(s.options["epochs"] for s in self.config.stages
                          if s.name == guided["after"])
            last = json.loads(Path(record["history"]).read_text())["entries"][-1]
            if int(last.get("epoch", -1)) != epochs:
                raise NasdetError(f"the last ID measurement is of epoch {last.get('epoch')}, "
                                  f"not of the trained model (epoch {epochs})")
            if channels != old:
                raise NasdetError(f"the measured stages have {channels} channels, the "
                                  f"candidate's widths are {old}")
            source_cost = float(space.complexity(candidate)[metric])  # kept when none fits
            record.update(source_cost=source_cost, budget_cost=guided["budget"] * source_cost)
            record.update(propose_candidate(space, candidate, dim.name, ids, metric=metric,
                                            budget=guided["budget"]))
            if record["widths"] == old:
                record["reason"] = "the ID-proportional widths are the candidate's own"
            else:
                record["proposed"] = True
        except NasdetError as exc:  # recorded; the trial goes on
            record["reason"] = str(exc)
        except Exception as exc:  # a model that does not build, a broken history: the same
            record["reason"] = f"{type(exc).__name__}: {exc}"
        atomic_write_json(trial_dir / ID_WIDTHS_FILE, {**record, "units": units})
        return record


def _ap_metrics(stage: Stage, found: dict[str, Any], epoch: int) -> dict[str, float]:
    """A train stage's metrics from mmdet's validation metrics after ``epoch`` epochs."""
    ap = float(found.get("coco/bbox_mAP", 0.0))
    ap50 = float(found.get("coco/bbox_mAP_50", 0.0))  # empty: no detections at all
    return {"ap": ap, "ap50": ap50, f"{stage.name}/ap": ap, f"{stage.name}/ap50": ap50,
            "epochs": float(epoch)}


def recorded_stages(trial_dir: str | Path,
                    params: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """The stages a trial directory records as done for ``params``, and their metrics.

    ``(0, {})`` when there is no record, or it is of other params.
    """
    trial_dir = Path(trial_dir)
    try:
        stored = json.loads((trial_dir / "params.json").read_text())
        record = json.loads((trial_dir / METRICS_FILE).read_text())
    except (OSError, ValueError):
        return 0, {}
    if not isinstance(record, dict) or stored != json.loads(json.dumps(params, default=str)):
        return 0, {}
    metrics = dict(record.get("metrics") or {})  # proxy_error/<name>: text
    return int(record.get("stages_done", 0) or 0), metrics


def read_id_proposal(trial_dir: str | Path | None) -> dict[str, Any] | None:
    """The params an ID-guided trial proposes (``id_widths.json``), or None.

    None when the trial wrote no proposal, or one that is not a new candidate.
    """
    if not trial_dir:
        return None
    try:
        record = json.loads((Path(trial_dir) / ID_WIDTHS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not record.get("proposed"):
        return None
    params = record.get("params")
    return dict(params) if isinstance(params, dict) else None


def probe_batch(cfg, num_images: int) -> dict[str, Any]:
    """The first ``num_images`` training images, as a dataloader yields them.

    The same images for every candidate, through the test pipeline (no random flip or
    crop), so proxy scores of different candidates are comparable.
    """
    from mmengine.dataset import pseudo_collate

    from nasdet.spectrum.detector import build_probe_dataset

    dataset = build_probe_dataset(cfg, "train")
    return pseudo_collate([dataset[i] for i in range(min(num_images, len(dataset)))])


def clear_trial_dir(trial_dir: Path) -> None:
    """Remove what a trial that did not finish left behind (a re-run starts clean)."""
    if trial_dir.exists():
        shutil.rmtree(trial_dir)
