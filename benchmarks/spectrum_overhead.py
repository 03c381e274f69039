"""Overhead of eigenspectrum probing, measured in one run on this machine.

    python benchmarks/spectrum_overhead.py [--quick]

Prints one table with the targets:

(a) forward-time ratio probed / plain (median of interleaved repeats after warm-up; the
    probe is created before and removed after each timed forward, so every probed
    forward pays for creating its accumulators; ``results()``, i.e. one
    eigendecomposition per layer, is not part of a forward and is timed separately):
    * the tiny detector (``configs/tiny_faster_rcnn_synth.py``) with every nn.Conv2d
      probed, batch 2 x 128 px, target <= 1.5;
    * mmdet's R50-FPN Faster R-CNN with the ``backbone_stages`` preset, 1 x 512 px,
      target <= 1.3.
(b) throughput of ``StreamingCovariance.update`` on N = 32768 samples of C = 256
    channels, counted as 2 N C^2 useful flops (the flops of the fp32 Gram GEMM; the
    centring, column sums and the C x C float64 work are overhead), as a fraction of this
    machine's fp32 matmul peak measured in the same run (median GFLOP/s of a 4096^3
    ``torch.mm``), target >= 0.6. ``update_feature_map`` on an (8, 256, 64, 64) map is
    reported as well.
(c) peak extra memory of probing: the peak resident set size (VmHWM, reset through
    /proc/self/clear_refs) above the resident size just before one forward, in a fresh
    process per case, probed minus plain; and the accumulators' float64 state size.

Timings are wall-clock medians; the machine may be shared, so the load average is printed
(``--threads 1`` gives steadier ratios when other processes compete for the cores).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from nasdet.spectrum import SpectrumProbe, StreamingCovariance  # noqa: E402

TINY_CONFIG = REPO / "configs" / "tiny_faster_rcnn_synth.py"


# ----------------------------------------------------------------------------- models
def _mmdet_config_path(rel: str) -> Path:
    import mmdet

    # By path: "mmdet::" resolution needs pkg_resources, gone from setuptools >= 81.
    return Path(mmdet.__file__).parent / ".mim" / "configs" / rel


def _build(cfg_model: Any) -> torch.nn.Module:
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    register_all_modules()
    torch.manual_seed(0)
    model = MODELS.build(cfg_model)
    model.eval()
    return model


def build_tiny() -> tuple[torch.nn.Module, str]:
    """The tiny detector of the repo config, or an equivalent mmdet build as fallback."""
    from mmengine import Config

    if TINY_CONFIG.exists():
        try:
            cfg = Config.fromfile(str(TINY_CONFIG))
            return _build(cfg.model), f"{TINY_CONFIG.relative_to(REPO)}"
        except Exception as err:  # fall back, and say so in the output
            reason = f"{type(err).__name__}: {err}".splitlines()[0][:80]
    else:
        reason = "config file missing"
    cfg = Config.fromfile(str(_mmdet_config_path("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py")))
    cfg.model.backbone.update(depth=18, init_cfg=None)
    cfg.model.neck.update(in_channels=[64, 128, 256, 512], out_channels=64)
    cfg.model.rpn_head.update(in_channels=64, feat_channels=64)
    cfg.model.roi_head.bbox_roi_extractor.out_channels = 64
    cfg.model.roi_head.bbox_head.in_channels = 64
    return _build(cfg.model), f"FALLBACK mmdet Faster R-CNN R18, 64-ch FPN ({reason})"


def build_r50() -> torch.nn.Module:
    from mmengine import Config

    cfg = Config.fromfile(str(_mmdet_config_path("faster_rcnn/faster-rcnn_r50_fpn_1x_coco.py")))
    cfg.model.backbone.init_cfg = None  # random init: no download, same compute
    return _build(cfg.model)


def data_samples(batch: int, size: int) -> list:
    from mmdet.structures import DetDataSample

    shape = (size, size)
    meta = dict(
        img_shape=shape,
        ori_shape=shape,
        pad_shape=shape,
        batch_input_shape=shape,
        scale_factor=(1.0, 1.0),
    )
    return [DetDataSample(metainfo=meta) for _ in range(batch)]


CASES: dict[str, dict[str, Any]] = {
    "tiny": dict(layers="convs", batch=2, size=128, target=1.5),
    "r50": dict(layers="backbone_stages", batch=1, size=512, target=1.3),
}


def _model_for(case: str) -> tuple[torch.nn.Module, str]:
    if case == "tiny":
        return build_tiny()
    return build_r50(), "mmdet faster-rcnn_r50_fpn_1x_coco.py (random init)"


# ----------------------------------------------------------------------------- timing
def _median_time(fn: Callable[[], Any], repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def forward_ratio(case: str, repeats: int) -> dict[str, Any]:
    spec = CASES[case]
    model, desc = _model_for(case)
    x = torch.randn(spec["batch"], 3, spec["size"], spec["size"])
    samples = data_samples(spec["batch"], spec["size"])

    def forward() -> Any:
        with torch.no_grad():
            return model(x, samples, mode="tensor")

    for _ in range(2):  # warm-up, both variants
        forward()
        with SpectrumProbe(model, spec["layers"]):
            forward()
    plain, probed = [], []
    probe = None
    for _ in range(repeats):  # interleaved, so load changes hit both alike
        t0 = time.perf_counter()
        forward()
        plain.append(time.perf_counter() - t0)
        probe = SpectrumProbe(model, spec["layers"])
        t0 = time.perf_counter()
        forward()
        probed.append(time.perf_counter() - t0)
        probe.remove()
    assert probe is not None
    t0 = time.perf_counter()
    results = probe.results()
    t_results = time.perf_counter() - t0
    t_plain, t_probed = statistics.median(plain), statistics.median(probed)
    return dict(
        model=desc,
        layers=len(results),
        plain_s=t_plain,
        probed_s=t_probed,
        ratio=t_probed / t_plain,
        results_s=t_results,
        state_mib=sum(r.channels * (r.channels + 1) * 8 for r in results.values()) / 2**20,
    )


def matmul_peak(repeats: int) -> float:
    n = 4096
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / _median_time(lambda: torch.mm(a, b), repeats) / 1e9


def update_throughput(repeats: int) -> dict[str, float]:
    n, c = 32768, 256
    x = torch.randn(n, c) * 3 + 1e3
    acc = StreamingCovariance(c)
    t_rows = _median_time(lambda: acc.update(x), repeats)
    fmap = torch.randn(8, c, 64, 64) * 3 + 1e3  # 8 * 64 * 64 = 32768 samples
    acc_map = StreamingCovariance(c)
    t_map = _median_time(lambda: acc_map.update_feature_map(fmap), repeats)
    flops = 2 * n * c * c
    return dict(update_gflops=flops / t_rows / 1e9, map_gflops=flops / t_map / 1e9)


# ----------------------------------------------------------------------------- memory
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def memory_child(case: str, variant: str) -> None:
    """In a fresh process: peak RSS above the pre-forward RSS of one forward."""
    spec = CASES[case]
    model, _ = _model_for(case)
    x = torch.randn(spec["batch"], 3, spec["size"], spec["size"])
    samples = data_samples(spec["batch"], spec["size"])
    with torch.no_grad():
        model(x, samples, mode="tensor")  # warm-up: lazy allocations, thread pools
    probe = SpectrumProbe(model, spec["layers"]) if variant == "probed" else None
    base = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    with torch.no_grad():
        model(x, samples, mode="tensor")
    peak = _status_kib("VmHWM")
    if probe is not None:
        probe.remove()
    print(json.dumps({"extra_kib": peak - base}))


def memory_extra(case: str) -> dict[str, float] | None:
    out = {}
    for variant in ("plain", "probed"):
        proc = subprocess.run(
            [
                sys.executable,
                __file__,
                "--memory-child",
                case,
                variant,
                "--threads",
                str(torch.get_num_threads()),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            print(f"memory measurement failed for {case}/{variant}: {proc.stderr[-300:]}")
            return None
        out[variant] = json.loads(lines[-1])["extra_kib"] / 1024
    return {
        "plain_mib": out["plain"],
        "probed_mib": out["probed"],
        "extra_mib": out["probed"] - out["plain"],
    }


# ----------------------------------------------------------------------------- main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads (default: torch's choice); on a shared, "
        "busy machine 1 thread gives steadier ratios",
    )
    parser.add_argument(
        "--memory-child", nargs=2, metavar=("CASE", "VARIANT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child)
        return
    import warnings

    warnings.filterwarnings("ignore")
    reps = 3 if args.quick else 7
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"load average at start {os.getloadavg()[0]:.2f}"
    )

    peak = matmul_peak(reps)
    thr = update_throughput(reps)
    tiny = forward_ratio("tiny", reps)
    r50 = forward_ratio("r50", 3 if args.quick else 5)
    peak_after = matmul_peak(reps)
    mem_tiny = memory_extra("tiny")
    mem_r50 = memory_extra("r50")

    print(f"\ntiny model: {tiny['model']}")
    print(
        f"fp32 matmul peak (4096^3 mm): {peak:.1f} GFLOP/s at start, "
        f"{peak_after:.1f} GFLOP/s after the forward timings"
    )
    for name, r in (("tiny, all convs, 2x128px", tiny), ("R50-FPN, stages, 1x512px", r50)):
        print(
            f"{name}: plain {r['plain_s'] * 1e3:.0f} ms, probed {r['probed_s'] * 1e3:.0f} ms, "
            f"{r['layers']} layers, results() {r['results_s'] * 1e3:.0f} ms, "
            f"state {r['state_mib']:.1f} MiB"
        )
    rows = [
        (
            "(a) probed/plain forward, tiny, all convs",
            f"{tiny['ratio']:.3f}",
            "<= 1.5",
            tiny["ratio"] <= 1.5,
        ),
        (
            "(a) probed/plain forward, R50-FPN 512px, stages",
            f"{r50['ratio']:.3f}",
            "<= 1.3",
            r50["ratio"] <= 1.3,
        ),
        (
            "(b) update() N=32768 C=256 / fp32 mm peak",
            f"{thr['update_gflops'] / peak:.3f} ({thr['update_gflops']:.1f} GFLOP/s)",
            ">= 0.6",
            thr["update_gflops"] / peak >= 0.6,
        ),
        (
            "(b) update_feature_map() 8x256x64x64 / peak",
            f"{thr['map_gflops'] / peak:.3f} ({thr['map_gflops']:.1f} GFLOP/s)",
            "(info)",
            None,
        ),
    ]
    for label, mem in (("tiny", mem_tiny), ("R50 512px", mem_r50)):
        if mem is None:
            rows.append((f"(c) peak extra memory, {label}", "n/a", "(info)", None))
        else:
            rows.append(
                (
                    f"(c) peak extra memory, {label}",
                    f"{mem['extra_mib']:.1f} MiB (plain {mem['plain_mib']:.0f}, "
                    f"probed {mem['probed_mib']:.0f})",
                    "(info)",
                    None,
                )
            )
    width = max(len(r[0]) for r in rows)
    vwidth = max(len(r[1]) for r in rows)
    print(f"\n{'measurement':<{width}}  {'value':<{vwidth}}  {'target':<7}  result")
    for label, value, target, ok in rows:
        verdict = "" if ok is None else ("PASS" if ok else "MISS")
        print(f"{label:<{width}}  {value:<{vwidth}}  {target:<7}  {verdict}")
    print(f"\nload average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
