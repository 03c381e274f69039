"""Sharing-configurable RetinaNet/RPN heads: hand-counted parameters, equivalence with
mmdet's heads, full detectors (loss, backward, predict) and the custom_imports route."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from nasdet.errors import NasdetError
from nasdet.models import FlexResNet, SharingRetinaHead, SharingRPNHead, count_parameters

C, F, K, L = 16, 8, 3, 5  # in channels, feat channels, classes, levels
RETINA_ANCHORS = dict(
    type="AnchorGenerator",
    octave_base_scale=4,
    scales_per_octave=3,
    ratios=[0.5, 1.0, 2.0],
    strides=[8, 16, 32, 64, 128],
)  # A = 9
RPN_ANCHORS = dict(
    type="AnchorGenerator", scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]
)  # A = 3
FOCAL = dict(type="FocalLoss", use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0)
LEVELS = ("shared", "shared_tower", "per_level")
CLS_REG = ("separate", "shared")


@pytest.fixture(autouse=True, scope="module")
def _mmdet_scope():
    from mmdet.utils import register_all_modules

    register_all_modules()


def _conv(cin: int, cout: int, k: int) -> int:
    return k * k * cin * cout + cout


def _tower(n: int, cin: int, feat: int) -> int:
    return 0 if n == 0 else _conv(cin, feat, 3) + (n - 1) * _conv(feat, feat, 3)


def retina_expected(
    level_sharing: str, cls_reg_sharing: str, stacked: int, c: int = C, f: int = F
) -> int:
    cin = f if stacked else c
    towers = (2 if cls_reg_sharing == "separate" else 1) * _tower(stacked, c, f)
    predictors = _conv(cin, 9 * K, 3) + _conv(cin, 9 * 4, 3)
    return {
        "shared": towers + predictors,
        "shared_tower": towers + L * predictors,
        "per_level": L * (towers + predictors),
    }[level_sharing]


def rpn_expected(level_sharing: str, num_convs: int) -> int:
    tower = _tower(num_convs, C, F)
    predictors = _conv(F, 3, 1) + _conv(F, 3 * 4, 1)
    return {
        "shared": tower + predictors,
        "shared_tower": tower + L * predictors,
        "per_level": L * (tower + predictors),
    }[level_sharing]


def retina(level_sharing="shared", cls_reg_sharing="separate", stacked=2, **kw):
    return SharingRetinaHead(
        num_classes=K,
        in_channels=C,
        feat_channels=F,
        stacked_convs=stacked,
        anchor_generator=RETINA_ANCHORS,
        loss_cls=FOCAL,
        level_sharing=level_sharing,
        cls_reg_sharing=cls_reg_sharing,
        **kw,
    )


def rpn(level_sharing="shared", num_convs=1):
    return SharingRPNHead(
        in_channels=C,
        feat_channels=F,
        anchor_generator=RPN_ANCHORS,
        num_convs=num_convs,
        level_sharing=level_sharing,
    )


def _feats(seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.rand(2, C, 2 ** (L - i), 2 ** (L - i), generator=gen) for i in range(L)]


def _randomize(module: torch.nn.Module) -> None:
    torch.manual_seed(3)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.1)


def _level_state(head: torch.nn.Module, names: list[str], level: int, per_level: set[str]) -> dict:
    """The state dict of a plain mmdet head holding ``head``'s modules for ``level``."""
    state = {}
    for name in names:
        module = getattr(head, name)
        module = module[level] if name in per_level else module
        state.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
    return state


# --------------------------------------------------------------------------- counts
@pytest.mark.parametrize("stacked", [2, 0])
@pytest.mark.parametrize("cls_reg_sharing", CLS_REG)
@pytest.mark.parametrize("level_sharing", LEVELS)
def test_retina_counts_match_hand_formula(level_sharing, cls_reg_sharing, stacked):
    head = retina(level_sharing, cls_reg_sharing, stacked)
    assert count_parameters(head) == retina_expected(level_sharing, cls_reg_sharing, stacked)
    assert count_parameters(head) == sum(p.numel() for p in head.parameters())


def test_retina_counts_literal_values():
    got = {(lv, cr): count_parameters(retina(lv, cr)) for lv in LEVELS for cr in CLS_REG}
    # T = 1160 + 584 = 1744 per tower; P = 1971 + 2628 = 4599 per predictor pair
    assert got == {
        ("shared", "separate"): 8087,
        ("shared", "shared"): 6343,
        ("shared_tower", "separate"): 26483,
        ("shared_tower", "shared"): 24739,
        ("per_level", "separate"): 40435,
        ("per_level", "shared"): 31715,
    }


@pytest.mark.parametrize("num_convs", [1, 2])
@pytest.mark.parametrize("level_sharing", LEVELS)
def test_rpn_counts_match_hand_formula(level_sharing, num_convs):
    assert count_parameters(rpn(level_sharing, num_convs)) == rpn_expected(level_sharing, num_convs)
    assert rpn_expected("shared", 1) == 1295 and rpn_expected("per_level", 1) == 6475


def test_sharing_is_by_identity():
    per = retina("per_level")
    assert per.tower("cls", 0) is not per.tower("cls", 1)
    assert per.predictor("reg", 0) is not per.predictor("reg", 4)
    st = retina("shared_tower", "shared")
    assert st.tower("cls", 0) is st.tower("reg", 3)
    assert st.predictor("cls", 0) is not st.predictor("cls", 1)
    sh = retina("shared")
    assert sh.predictor("cls", 0) is sh.predictor("cls", 4)
    assert sh.tower("cls", 0) is not sh.tower("reg", 0)
    r = rpn("shared_tower")
    assert r.tower(0) is r.tower(4) and r.predictor("cls", 0) is not r.predictor("cls", 1)


# --------------------------------------------------------------------------- equivalence
def test_shared_retina_is_mmdet_retina_head():
    from mmdet.models.dense_heads import RetinaHead

    ref = RetinaHead(
        num_classes=K,
        in_channels=C,
        feat_channels=F,
        stacked_convs=2,
        anchor_generator=RETINA_ANCHORS,
        loss_cls=FOCAL,
    )
    _randomize(ref)
    ours = retina()
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    with torch.no_grad():
        for a, b in zip(ours(_feats()), ref(_feats()), strict=True):
            for x, y in zip(a, b, strict=True):
                torch.testing.assert_close(x, y)


@pytest.mark.parametrize("level_sharing", ["per_level", "shared_tower"])
def test_per_level_retina_equals_mmdet_head_per_level(level_sharing):
    from mmdet.models.dense_heads import RetinaHead

    ours = retina(level_sharing)
    _randomize(ours)
    ref = RetinaHead(
        num_classes=K,
        in_channels=C,
        feat_channels=F,
        stacked_convs=2,
        anchor_generator=RETINA_ANCHORS,
        loss_cls=FOCAL,
    )
    per = {"retina_cls", "retina_reg"} | (
        {"cls_convs", "reg_convs"} if level_sharing == "per_level" else set()
    )
    feats = _feats()
    with torch.no_grad():
        cls_scores, bbox_preds = ours(feats)
        for level in range(L):
            ref.load_state_dict(
                _level_state(
                    ours, ["cls_convs", "reg_convs", "retina_cls", "retina_reg"], level, per
                ),
                strict=True,
            )
            cls_ref, reg_ref = ref.forward_single(feats[level])
            torch.testing.assert_close(cls_scores[level], cls_ref)
            torch.testing.assert_close(bbox_preds[level], reg_ref)


def test_shared_cls_reg_tower_feeds_both_predictors():
    head = retina("per_level", "shared")
    _randomize(head)
    assert not hasattr(head, "cls_convs") and not hasattr(head, "reg_convs")
    x = _feats()[2]
    with torch.no_grad():
        feat = x
        for conv in head.shared_convs[2]:
            feat = conv(feat)
        cls, reg = head.forward_single(x, 2)
        torch.testing.assert_close(cls, head.retina_cls[2](feat))
        torch.testing.assert_close(reg, head.retina_reg[2](feat))


@pytest.mark.parametrize("level_sharing", ["per_level", "shared_tower"])
def test_per_level_rpn_equals_mmdet_rpn_per_level(level_sharing):
    from mmdet.models.dense_heads import RPNHead

    ours = rpn(level_sharing)
    _randomize(ours)
    ref = RPNHead(in_channels=C, feat_channels=F, anchor_generator=RPN_ANCHORS)
    per = {"rpn_cls", "rpn_reg"} | ({"rpn_conv"} if level_sharing == "per_level" else set())
    feats = _feats()
    with torch.no_grad():
        cls_scores, bbox_preds = ours(feats)
        for level in range(L):
            ref.load_state_dict(
                _level_state(ours, ["rpn_conv", "rpn_cls", "rpn_reg"], level, per), strict=True
            )
            cls_ref, reg_ref = ref.forward_single(feats[level])
            torch.testing.assert_close(cls_scores[level], cls_ref)
            torch.testing.assert_close(bbox_preds[level], reg_ref)


def test_shared_rpn_keys_are_mmdet_rpn_keys():
    from mmdet.models.dense_heads import RPNHead

    ref = RPNHead(in_channels=C, feat_channels=F, anchor_generator=RPN_ANCHORS)
    assert {k: v.shape for k, v in rpn().state_dict().items()} == {
        k: v.shape for k, v in ref.state_dict().items()
    }


def test_focal_bias_prior_reaches_every_level():
    head = retina("per_level")
    head.init_weights()
    prior = -torch.log(torch.tensor((1 - 0.01) / 0.01))
    for level in range(L):
        torch.testing.assert_close(
            head.retina_cls[level].bias, prior.expand_as(head.retina_cls[level].bias)
        )
        assert torch.all(head.retina_reg[level].bias == 0)


def test_level_errors():
    with pytest.raises(NasdetError, match="5 levels"):
        retina("per_level")(_feats()[:4])
    with pytest.raises(NasdetError, match="level index"):
        rpn("per_level").forward_single(_feats()[0])
    with pytest.raises(NasdetError) as info:
        retina(cls_reg_sharing="both")
    assert info.value.key == "cls_reg_sharing"


# --------------------------------------------------------------------------- detectors
BACKBONE = dict(
    type="FlexResNet",
    block="basic",
    depths=(2, 3, 3, 2),
    widths=(16, 24, 32, 48),
    unique_blocks=(2, 2, 2, 2),
    norm_eval=False,
)


def _neck(start_level: int) -> dict:
    channels = list(FlexResNet.stage_channels_for(**BACKBONE))  # neck derived from backbone
    return dict(
        type="SharingFPN",
        in_channels=channels,
        out_channels=16,
        start_level=start_level,
        output_sharing="shared",
    )


def _run_detector(model, batch) -> None:
    model.init_weights()
    model.train()
    data = model.data_preprocessor(batch, training=True)
    losses = model.loss(data["inputs"], data["data_samples"])
    loss, _ = model.parse_losses(losses)
    assert torch.isfinite(loss)
    loss.backward()
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(batch, training=False)
        results = model.predict(data["inputs"], data["data_samples"])
    assert len(results) == 2
    for res in results:
        pred = res.pred_instances
        assert pred.bboxes.ndim == 2 and pred.bboxes.shape[1] == 4
        assert len(pred.scores) == len(pred.labels) == len(pred.bboxes)
        assert torch.all(pred.labels < 3)


@pytest.mark.parametrize(
    "level_sharing, cls_reg_sharing",
    [
        ("shared", "separate"),
        ("shared_tower", "shared"),
        ("per_level", "separate"),
        ("per_level", "shared"),
    ],
)
def test_retinanet_loss_backward_predict(
    level_sharing, cls_reg_sharing, det_batch, mmdet_base_model_cfg
):
    from mmdet.registry import MODELS

    cfg = mmdet_base_model_cfg("retinanet_r50_fpn.py")
    cfg["backbone"] = dict(BACKBONE)
    cfg["neck"] = dict(_neck(start_level=1), add_extra_convs="on_input", num_outs=5)
    cfg["bbox_head"].update(
        type="SharingRetinaHead",
        num_classes=3,
        in_channels=16,
        feat_channels=16,
        stacked_convs=2,
        level_sharing=level_sharing,
        cls_reg_sharing=cls_reg_sharing,
    )
    model = MODELS.build(cfg)
    assert count_parameters(model.bbox_head) == retina_expected(
        level_sharing, cls_reg_sharing, 2, 16, 16
    )
    _run_detector(model, det_batch())
    assert all(p.grad is not None for p in model.bbox_head.parameters())
    assert model.neck.fpn_convs[0].conv.weight.grad is not None


@pytest.mark.parametrize("level_sharing", LEVELS)
def test_faster_rcnn_loss_backward_predict(level_sharing, det_batch, mmdet_base_model_cfg):
    from mmdet.registry import MODELS

    cfg = mmdet_base_model_cfg("faster-rcnn_r50_fpn.py")
    cfg["backbone"] = dict(BACKBONE)
    cfg["neck"] = dict(_neck(start_level=0), num_outs=5)
    cfg["rpn_head"].update(
        type="SharingRPNHead", in_channels=16, feat_channels=16, level_sharing=level_sharing
    )
    cfg["roi_head"]["bbox_roi_extractor"]["out_channels"] = 16
    cfg["roi_head"]["bbox_head"].update(in_channels=16, fc_out_channels=32, num_classes=3)
    model = MODELS.build(cfg)
    n_levels = 5 if level_sharing == "per_level" else 1
    assert len(list(model.rpn_head.rpn_conv.modules())) == (1 if n_levels == 1 else 1 + n_levels)
    _run_detector(model, det_batch())
    assert all(p.grad is not None for p in model.rpn_head.parameters())


# --------------------------------------------------------------------------- custom_imports
def test_custom_imports_route_in_fresh_interpreter(tmp_path: Path):
    """A plain config with custom_imports builds nasdet's modules through mmdet's registry."""
    config = tmp_path / "plain_cfg.py"
    config.write_text(
        textwrap.dedent("""
        custom_imports = dict(imports=['nasdet.models'], allow_failed_imports=False)
        model = dict(
            backbone=dict(type='FlexResNet', depth=18, width_multipliers=0.25,
                          unique_blocks=(2, 2, 2, 2)),
            neck=dict(type='SharingFPN', in_channels=[16, 32, 64, 128], out_channels=16,
                      num_outs=5, output_sharing='shared'),
            head=dict(type='SharingRPNHead', in_channels=16, feat_channels=16,
                      level_sharing='per_level'))
    """)
    )
    script = textwrap.dedent(f"""
        import json, sys
        from mmdet.registry import MODELS
        from mmdet.utils import register_all_modules
        register_all_modules()
        before = 'FlexResNet' in MODELS.module_dict
        from mmengine.config import Config
        cfg = Config.fromfile({str(config)!r})
        counts = {{k: sum(p.numel() for p in MODELS.build(v).parameters())
                  for k, v in cfg.model.items()}}
        banned = sorted(m for m in sys.modules
                        if m.split('.')[0] in ('ray', 'optuna') or m.startswith('nasdet.search'))
        print(json.dumps(dict(before=before, counts=counts, banned=banned)))
    """)
    repo = Path(__file__).resolve().parents[2]
    env = dict(
        os.environ,
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(repo) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["before"] is False and out["banned"] == []
    from mmdet.registry import MODELS
    from mmengine.config import Config

    expected = {
        k: count_parameters(MODELS.build(v)) for k, v in Config.fromfile(config).model.items()
    }
    assert out["counts"] == expected
    # RPNHead's default anchors: 3 scales x 3 ratios = 9 per position
    assert expected["head"] == 5 * (_conv(16, 16, 3) + _conv(16, 9, 1) + _conv(16, 36, 1))
