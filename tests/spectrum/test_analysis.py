"""analyze_checkpoints against NumPy on features captured with plain forward hooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nasdet.errors import NasdetError
from nasdet.models.utils.build import build_detector
from nasdet.spectrum.analysis import analyze_checkpoints
from nasdet.spectrum.detector import build_probe_dataset, measure_spectra
from tests.conftest import shrink_config

NUM_IMAGES = 6  # two batches of 4 and 2: the last batch is partial
REL_TOL = 1e-6  # fp32 features; eigenvalues relative to the largest one


@pytest.fixture(scope="module")
def trained(tiny_det_root: Path, tmp_path_factory: pytest.TempPathFactory):
    """The tiny Faster R-CNN after one epoch, and its config."""
    from nasdet.train import train

    work = tmp_path_factory.mktemp("spectrum_train")
    cfg = shrink_config("tiny_faster_rcnn_synth.py", tiny_det_root, work, epochs=1)
    train(cfg)
    return cfg, work / "epoch_1.pth"


def _reference_model(cfg, ckpt: Path) -> nn.Module:
    """The detector, built and loaded without nasdet.spectrum.detector."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules

    import nasdet.models  # noqa: F401

    register_all_modules()
    model = MODELS.build(cfg.model)
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    model.load_state_dict(state)
    return model.eval()


def _reference_batches(cfg, n: int) -> list[dict]:
    """The first n val images through mmengine's own val dataloader."""
    from mmengine.runner import Runner

    loader = Runner.build_dataloader(cfg.val_dataloader.to_dict())
    out, seen = [], 0
    for batch in loader:
        k = min(n - seen, len(batch["inputs"]))
        out.append({"inputs": batch["inputs"][:k], "data_samples": batch["data_samples"][:k]})
        seen += k
        if seen == n:
            break
    return out


def _copy(out):
    # Copies: a later in-place op (bbox head: fc then ReLU(inplace=True)) must not change
    # what the module returned.
    return out.clone() if isinstance(out, torch.Tensor) else type(out)(_copy(o) for o in out)


def _capture(model: nn.Module, names: list[str], run) -> dict[str, list[torch.Tensor]]:
    """Outputs of the named modules over all calls, by plain forward hooks."""
    got: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    modules = dict(model.named_modules())
    handles = [modules[n].register_forward_hook(
        lambda m, a, out, n=n: got[n].append(_copy(out))) for n in names]
    try:
        with torch.no_grad():
            run()
    finally:
        for h in handles:
            h.remove()
    return got


def _samples(t: torch.Tensor) -> np.ndarray:
    """(B, C, *spatial) or (N, C) -> (samples, C) float64."""
    t = t.detach().double()
    if t.ndim > 2:
        t = t.movedim(1, -1)
    return t.reshape(-1, t.shape[-1]).numpy()


def _np_spectrum(samples: np.ndarray) -> np.ndarray:
    samples = np.asarray(samples)
    return np.sort(np.linalg.eigh(np.cov(samples, rowvar=False))[0])[::-1].clip(0)


def _assert_layer_matches(layer: dict, samples: np.ndarray) -> None:
    ref = _np_spectrum(samples)
    got = np.asarray(layer["eigenvalues"])
    assert layer["channels"] == samples.shape[1]
    assert layer["count"] == samples.shape[0]
    assert np.abs(got - ref).max() <= REL_TOL * ref[0], layer["name"]
    lam = 1e-3 * ref[0]
    id_ref = float(np.sum(ref / (ref + lam)))
    # N(lambda) is sensitive to the fp32 rounding of near-zero eigenvalues (rank-deficient
    # layers: fewer samples than channels): allow 1e-6 relative plus the first-order
    # propagation of the eigenvalue differences, d N / d mu_j = lambda / (mu_j + lambda)^2.
    tol = REL_TOL * id_ref + float(np.sum(np.abs(got - ref) * lam
                                          / (np.minimum(got, ref) + lam) ** 2))
    assert abs(layer["measures"]["id_dof"] - id_ref) <= tol, layer["name"]
    assert layer["measures"]["id_per_width"] == pytest.approx(
        layer["measures"]["id_dof"] / samples.shape[1], rel=1e-12)
    pr_ref = ref.sum() ** 2 / np.dot(ref, ref)
    assert layer["measures"]["participation_ratio"] == pytest.approx(pr_ref, rel=REL_TOL)


def test_backbone_and_fpn_spectra_match_numpy(trained) -> None:
    cfg, ckpt = trained
    res = analyze_checkpoints(cfg, [ckpt], layers=["backbone_stages", "fpn"],
                              num_images=NUM_IMAGES, batch_size=4, progress=False)
    layers = res["checkpoints"][0]["layers"]

    model = _reference_model(cfg, ckpt)
    stages = [f"backbone.layer{i}" for i in range(1, 5)]
    batches = _reference_batches(cfg, NUM_IMAGES)

    def run() -> None:
        for batch in batches:
            model.extract_feat(model.data_preprocessor(batch, False)["inputs"])

    got = _capture(model, [*stages, "neck"], run)
    assert list(layers) == [*stages, *(f"neck.{i}" for i in range(5))]
    for name in stages:
        _assert_layer_matches(layers[name], np.concatenate([_samples(t) for t in got[name]]))
    for level in range(5):
        samples = np.concatenate([_samples(out[level]) for out in got["neck"]])
        _assert_layer_matches(layers[f"neck.{level}"], samples)
    # 64-px images: layer1 is at stride 4 (16 x 16 positions per image).
    assert layers["backbone.layer1"]["count"] == NUM_IMAGES * 16 * 16
    meta = res["meta"]
    assert meta["num_images"] == NUM_IMAGES and meta["split"] == "val"
    assert "extract_feat" in meta["forward"] and "0.001" in meta["lambda_rule"]
    assert res["checkpoints"][0]["checkpoint"] == str(ckpt)


def test_head_spectra_use_the_full_forward_and_match_numpy(trained) -> None:
    cfg, ckpt = trained
    res = analyze_checkpoints(cfg, [ckpt], layers=["rpn_head", "roi_head"],
                              num_images=NUM_IMAGES, batch_size=4, progress=False)
    layers = res["checkpoints"][0]["layers"]
    assert "predict" in res["meta"]["forward"]

    model = _reference_model(cfg, ckpt)
    batches = _reference_batches(cfg, NUM_IMAGES)
    names = ["rpn_head.rpn_conv", "roi_head.bbox_head.shared_fcs.0",
             "roi_head.bbox_head.shared_fcs.1"]

    def run() -> None:
        for batch in batches:
            data = model.data_preprocessor(batch, False)
            model.predict(data["inputs"], data["data_samples"])

    got = _capture(model, names, run)
    assert list(layers) == names
    # rpn_conv runs once per pyramid level (5): the levels are pooled.
    assert len(got["rpn_head.rpn_conv"]) == 5 * len(batches)
    for name in names:
        _assert_layer_matches(layers[name], np.concatenate([_samples(t) for t in got[name]]))


def test_two_checkpoints_side_by_side_differ(trained) -> None:
    cfg, ckpt = trained
    res = analyze_checkpoints(cfg, [None, ckpt], layers=["backbone_stages"], num_images=4,
                              batch_size=4, progress=False)
    init, after = res["checkpoints"]
    assert (init["label"], after["label"]) == ("init", "epoch_1")
    assert init["checkpoint"] is None and after["checkpoint_epoch"] == 1
    for name, layer in init["layers"].items():
        other = after["layers"][name]
        assert (layer["channels"], layer["count"]) == (other["channels"], other["count"])
        a, b = np.asarray(layer["eigenvalues"]), np.asarray(other["eigenvalues"])
        assert np.abs(a - b).max() > 1e-3 * max(a[0], b[0]), name


def test_initialisation_is_reproducible_and_seeded(trained) -> None:
    cfg, _ = trained
    kw = dict(layers=["backbone.layer4"], num_images=2, batch_size=2, progress=False)
    a = analyze_checkpoints(cfg, [None], seed=3, **kw)["checkpoints"][0]["layers"]
    b = analyze_checkpoints(cfg, [None], seed=3, **kw)["checkpoints"][0]["layers"]
    c = analyze_checkpoints(cfg, [None], seed=4, **kw)["checkpoints"][0]["layers"]
    name = "backbone.layer4"
    assert a[name]["eigenvalues"] == b[name]["eigenvalues"]
    assert a[name]["eigenvalues"] != c[name]["eigenvalues"]


def test_checkpoint_of_another_shape_names_file_and_key(trained, tmp_path: Path) -> None:
    cfg, ckpt = trained
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    state["backbone.conv1.weight"] = torch.zeros(8, 3, 7, 7)
    bad = tmp_path / "bad.pth"
    torch.save({"state_dict": state}, bad)
    with pytest.raises(NasdetError, match=r"bad\.pth: backbone\.conv1\.weight: .*shape"):
        analyze_checkpoints(cfg, [bad], layers=["fpn"], num_images=1, progress=False)
    del state["backbone.conv1.weight"]
    torch.save({"state_dict": state}, bad)
    with pytest.raises(NasdetError, match=r"bad\.pth: backbone\.conv1\.weight: .*missing"):
        analyze_checkpoints(cfg, [bad], layers=["fpn"], num_images=1, progress=False)


def test_bad_layer_selections(trained) -> None:
    cfg, _ = trained
    with pytest.raises(NasdetError, match=r"pattern 'backbone\.nothing' matches no module"
                                          r".*backbone\.conv1"):
        analyze_checkpoints(cfg, [None], layers=["fpn", "backbone.nothing"], num_images=1,
                            progress=False)
    # A module that exists but never runs at inference (a loss).
    with pytest.raises(NasdetError, match=r"rpn_head\.loss_cls: .*did not run"):
        analyze_checkpoints(cfg, [None], layers=["rpn_head.loss_cls"], num_images=1,
                            progress=False)


def test_bad_options(trained) -> None:
    cfg, _ = trained
    with pytest.raises(NasdetError, match="--num-images"):
        analyze_checkpoints(cfg, [None], layers=["fpn"], num_images=0, progress=False)
    with pytest.raises(NasdetError, match="--labels"):
        analyze_checkpoints(cfg, [None], layers=["fpn"], num_images=1, labels=["a", "b"],
                            progress=False)
    with pytest.raises(NasdetError, match="--split"):
        analyze_checkpoints(cfg, [None], layers=["fpn"], num_images=1, split="holdout",
                            progress=False)
    with pytest.raises(NasdetError, match="nowhere.pth: checkpoint file not found"):
        analyze_checkpoints(cfg, ["nowhere.pth"], layers=["fpn"], num_images=1,
                            progress=False)


def test_train_split_is_deterministic(trained) -> None:
    cfg, _ = trained
    ds = build_probe_dataset(cfg, "train")
    types = [t.__class__.__name__ for t in ds.pipeline.transforms]
    assert not any(t.startswith("Random") for t in types), types
    assert "RandomFlip" in [t.type for t in cfg.train_dataloader.dataset.pipeline]
    first, again = ds[0]["inputs"], ds[0]["inputs"]
    assert torch.equal(first, again)


class _Toy(nn.Module):
    """extract_feat over two convs; the second conv is kept in eval mode on purpose."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(6, 5, 1))
        self.backbone[2].eval()

    def data_preprocessor(self, batch, training):  # noqa: D401 - like mmdet's
        return {"inputs": batch["inputs"], "data_samples": None}

    def extract_feat(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)


def test_measure_spectra_restores_modes_and_subsamples() -> None:
    torch.manual_seed(0)
    model = _Toy()
    assert model.training and not model.backbone[2].training
    images = [torch.randn(2, 3, 9, 7), torch.randn(1, 3, 9, 7)]
    batches = [{"inputs": x} for x in images]
    res = measure_spectra(model, batches, layers=["backbone.0", "backbone.2"], stride=2,
                          all_reduce=False)
    assert model.training and model.backbone[0].training and not model.backbone[2].training
    # stride 2 over 9 x 7: 5 x 4 positions per image, 3 images.
    assert res["backbone.0"].count == 3 * 5 * 4
    with torch.no_grad():
        feats = [model.backbone[0](x)[:, :, ::2, ::2] for x in images]
    ref = _np_spectrum(np.concatenate([_samples(f) for f in feats]))
    got = res["backbone.0"].eigenvalues.numpy()
    assert np.abs(got - ref).max() <= REL_TOL * ref[0]


def test_build_detector_is_quiet_and_seeded(trained, capsys) -> None:
    cfg, _ = trained
    a = build_detector(cfg, seed=1).state_dict()
    b = build_detector(cfg, seed=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    captured = capsys.readouterr()
    assert "Init" not in captured.out + captured.err  # no per-parameter init log


def test_all_reduce_without_a_process_group_is_one_clear_error(tiny_cfg):
    from nasdet.models.utils.build import build_detector
    from nasdet.spectrum.detector import build_probe_dataset, iter_probe_batches, measure_spectra

    cfg = tiny_cfg()
    model = build_detector(cfg)
    batches = iter_probe_batches(build_probe_dataset(cfg), range(1), 1)
    with pytest.raises(NasdetError, match="all_reduce needs an initialised torch.distributed"):
        measure_spectra(model, batches, layers=["fpn"], all_reduce=True, progress=False)
