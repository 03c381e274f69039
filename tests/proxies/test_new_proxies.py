"""MeCo, ZiCo, AZ-NAS and the ID variants against hand-computed values.

Each case is built so that the expected number follows from the definition by hand
(orthogonal or exactly dependent channels, one-channel Jacobians, NumPy gradients of a
linear chain) or from an independent NumPy computation; the detector cases check that
every proxy runs through :class:`~nasdet.proxies.MMDetAdapter` and leaves the model as
it was.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nasdet.errors import NasdetError
from nasdet.proxies import (
    PROXIES,
    AZNASExpressivity,
    AZNASProgressivity,
    AZNASTrainability,
    IDDynamics,
    IDGaussRel,
    IDWidthNorm,
    MeCo,
    Proxy,
    TorchAdapter,
    ZiCo,
    compute_proxies,
    registered_proxies,
)
from nasdet.proxies.azns import isotropy_entropy
from nasdet.proxies.id_variants import DEFAULT_SCALE_WEIGHTS, scale_weight

NEW = ["meco", "zico", "azns_expressivity", "azns_progressivity", "azns_trainability",
       "id_width_norm", "id_gauss_rel", "id_dynamics"]
# float64 cases: a few hundred operations, each rounding at 2^-53
TOL = 1e-10
ROOT = Path(__file__).resolve().parents[2]


def _np_dof(samples: np.ndarray, rel_lambda: float = 1e-3) -> float:
    """Suzuki's N(λ) of the covariance of ``samples`` (rows = samples), by hand."""
    mu = np.clip(np.linalg.eigvalsh(np.cov(samples, rowvar=False)), 0.0, None)
    return float(np.sum(mu / (mu + rel_lambda * mu.max())))


def _np_samples(fmap: torch.Tensor) -> np.ndarray:
    f = fmap.detach().double().numpy()
    return f.transpose(0, 2, 3, 1).reshape(-1, f.shape[1])


def _hadamard(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.block([[h, h], [h, -h]])
    return h


def _small_convnet() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.Dropout(0.5),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5),
    )


def _convnet_adapter() -> TorchAdapter:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(4, 3, 12, 12, generator=gen)
    return TorchAdapter(x, torch.tensor([0, 1, 2, 3]), loss_fn=nn.CrossEntropyLoss(),
                        feature_modules=["2", "6"])


# --- registry and contract -------------------------------------------------------------

def test_new_proxies_are_registered_with_their_contract():
    assert set(NEW) <= set(registered_proxies())
    for name in NEW:
        proxy = PROXIES.build(dict(type=name))
        assert isinstance(proxy, Proxy) and proxy.name == name
        assert proxy.mode in ("train", "eval") and proxy.needs in ("loss", "features", "none")
        assert proxy.reference and proxy.unit
    assert PROXIES.build(dict(type="zico", splits=3)).splits == 3
    with pytest.raises(NasdetError):
        ZiCo(splits=1)
    with pytest.raises(NasdetError):
        MeCo(samples="two")


@pytest.mark.parametrize("name", NEW)
def test_new_proxy_leaves_weights_grads_modes_and_rng_unchanged(name):
    net = _small_convnet()
    net.train()
    net[3].train(False)
    existing = torch.full_like(net[0].weight, 0.5)
    net[0].weight.grad = existing
    state = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [m.training for m in net.modules()]
    rng = torch.get_rng_state()
    spec = dict(type=name, steps=2) if name == "id_dynamics" else name
    (result,) = compute_proxies(net, _convnet_adapter(), [spec])
    assert result.ok, result.error
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert [m.training for m in net.modules()] == flags
    assert net[0].weight.grad is existing
    assert all(p.grad is None for p in list(net.parameters())[1:])
    assert torch.equal(torch.get_rng_state(), rng)
    again = PROXIES.build(spec if isinstance(spec, dict) else dict(type=spec))
    assert again.score(net, _convnet_adapter()) == result.value      # seeded


# --- MeCo ------------------------------------------------------------------------------

class _Branches(nn.Module):
    """Three 1×1 convolutions of the same input, with hand-set weights."""

    def __init__(self):
        super().__init__()
        self.ident = nn.Conv2d(3, 3, 1, bias=False)        # orthogonal channels: λ_min 1
        self.dependent = nn.Conv2d(3, 2, 1)                # a and 2a + 1: λ_min 0
        self.mixed = nn.Conv2d(3, 2, 1, bias=False)         # a and a + b: λ_min 1 − 1/√2
        with torch.no_grad():
            self.ident.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.dependent.weight.copy_(torch.tensor([[1.0, 0, 0], [2.0, 0, 0]]).view(2, 3, 1, 1))
            self.dependent.bias.copy_(torch.tensor([0.0, 1.0]))
            self.mixed.weight.copy_(torch.tensor([[1.0, 0, 0], [1.0, 1.0, 0]]).view(2, 3, 1, 1))

    def forward(self, x):
        return [self.ident(x), self.dependent(x), self.mixed(x)]


def _orthogonal_image() -> torch.Tensor:
    # three zero-mean, mutually orthogonal channels over 2×2 positions
    rows = _hadamard(4)[1:]                                   # 3 × 4
    return torch.from_numpy(rows).view(1, 3, 2, 2)


def test_meco_of_orthogonal_dependent_and_half_correlated_channels():
    net = _Branches().double()
    x = _orthogonal_image()
    expected = 1.0 + 0.0 + (1.0 - 1.0 / math.sqrt(2.0))
    assert MeCo().score(net, TorchAdapter(x)) == pytest.approx(expected, abs=TOL)

    # 'one' reads the first image only; 'batch' pools images × positions (NumPy reference)
    noise = torch.randn(1, 3, 2, 2, generator=torch.Generator().manual_seed(3)).double()
    batch = torch.cat([x, noise])
    assert MeCo().score(net, TorchAdapter(batch)) == pytest.approx(expected, abs=TOL)
    with torch.no_grad():
        maps = net(batch)
    ref = sum(np.linalg.eigvalsh(np.corrcoef(_np_samples(m), rowvar=False)).min()
              for m in maps)
    assert MeCo(samples="batch").score(net, TorchAdapter(batch)) == pytest.approx(ref, abs=TOL)
    assert ref != pytest.approx(expected, abs=1e-3)


def test_meco_is_zero_for_a_layer_wider_than_its_positions():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 1).double()                      # 8 channels, 4 positions
    value = MeCo().score(conv, TorchAdapter(torch.randn(2, 3, 2, 2, dtype=torch.float64)))
    assert value == pytest.approx(0.0, abs=1e-12)


# --- AZ-NAS ----------------------------------------------------------------------------

def _stage_maps() -> list[torch.Tensor]:
    h = torch.from_numpy(_hadamard(8))                       # rows 1.. are zero-mean, orthogonal
    v = h[1]
    rank1 = torch.stack([v, 3.0 * v]).view(1, 2, 2, 4)       # entropy 0
    iso2 = h[1:3].reshape(1, 2, 2, 4)                        # entropy log 2
    iso4 = h[1:5].reshape(1, 4, 2, 4)                        # entropy log 4
    return [rank1, iso2, iso4]


def test_isotropy_entropy_of_isotropic_and_rank_one_maps_and_numpy():
    rank1, iso2, iso4 = _stage_maps()
    assert isotropy_entropy(rank1) == pytest.approx(0.0, abs=TOL)
    assert isotropy_entropy(iso2) == pytest.approx(math.log(2.0), abs=TOL)
    assert isotropy_entropy(iso4) == pytest.approx(math.log(4.0), abs=TOL)
    fmap = torch.randn(3, 6, 5, 5, generator=torch.Generator().manual_seed(0)).double()
    mu = np.linalg.eigvalsh(np.cov(_np_samples(fmap), rowvar=False))
    p = mu / mu.sum()
    assert isotropy_entropy(fmap) == pytest.approx(float(-(p * np.log(p)).sum()), abs=TOL)


def test_expressivity_and_progressivity_of_hand_made_stages():
    maps = _stage_maps()
    adapter = TorchAdapter(torch.zeros(1, 3, 2, 4, dtype=torch.float64),
                           stage_fn=lambda _m, _x: maps)
    net = nn.Identity()
    # entropies 0, log 2, log 4: sum 3 log 2; least step log 2
    assert AZNASExpressivity().score(net, adapter) == pytest.approx(3 * math.log(2), abs=TOL)
    assert AZNASProgressivity().score(net, adapter) == pytest.approx(math.log(2), abs=TOL)
    backwards = TorchAdapter(adapter.inputs(), stage_fn=lambda _m, _x: maps[::-1])
    assert AZNASProgressivity().score(net, backwards) == pytest.approx(-math.log(2), abs=TOL)
    single = TorchAdapter(adapter.inputs(), stage_fn=lambda _m, _x: maps[:1])
    (result,) = compute_proxies(net, single, [AZNASProgressivity()])
    assert result.value is None and "two stages" in result.error


def test_trainability_of_one_channel_jacobians_is_exact():
    # x (3 ch) -> 1×1 conv to 1 channel: J = w1ᵀ per position, σ = ‖w1‖;
    # 1 ch -> 2×2 stride-2 conv: pixel-unshuffled J = w2 (4 entries), σ = ‖w2‖_F.
    # With one output channel, (1/N) Σ g_in g_out = J (g² = 1 for g = ±1): no sampling error.
    net = nn.Sequential(nn.Conv2d(3, 1, 1), nn.Conv2d(1, 1, 2, stride=2)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).view(1, 3, 1, 1))
        net[1].weight.copy_(torch.tensor([[0.3, -0.4], [1.2, 0.1]], dtype=torch.float64)
                            .view(1, 1, 2, 2))

    def stages(m, x):
        c1 = m[0](x)
        return [x, c1, m[1](c1)]

    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)).double()
    adapter = TorchAdapter(x, stage_fn=stages)
    s1 = math.sqrt(0.25 + 1.0 + 4.0)
    s2 = math.sqrt(0.09 + 0.16 + 1.44 + 0.01)
    expected = ((-s1 - 1 / s1 + 2) + (-s2 - 1 / s2 + 2)) / 2
    value = AZNASTrainability(kaiming_init=False).score(net, adapter)
    assert value == pytest.approx(expected, abs=TOL)
    # an orthogonal 1×1 map has σ = 1 and the best possible term, 0
    ortho = nn.Sequential(nn.Conv2d(1, 1, 1, bias=False), nn.Conv2d(1, 1, 1, bias=False)).double()
    with torch.no_grad():
        ortho[0].weight.fill_(-1.0)
        ortho[1].weight.fill_(-1.0)
    flat = TorchAdapter(x[:, :1], stage_fn=stages)
    assert AZNASTrainability(kaiming_init=False).score(ortho, flat) == pytest.approx(0.0, abs=TOL)
    # a stage that is exactly the one before it scores -inf, as in the authors' code
    with torch.no_grad():
        ortho[1].weight.fill_(1.0)
    assert AZNASTrainability(kaiming_init=False).score(ortho, flat) == float("-inf")
    # the default re-initialises a copy: another score, the model untouched
    before = net[0].weight.clone()
    assert AZNASTrainability().score(net, adapter) != pytest.approx(expected, abs=1e-6)
    assert torch.equal(net[0].weight, before)


# --- ZiCo ------------------------------------------------------------------------------

def test_zico_of_a_linear_chain_matches_numpy_gradients_per_half():
    w1 = np.array([[0.5, -1.0, 0.25], [1.5, 0.5, -0.5], [-0.75, 0.25, 1.0], [0.2, 0.3, -0.4]])
    w2 = np.array([[1.0, -0.5, 0.75, 2.0], [-1.25, 0.5, 0.3, -0.6]])
    net = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 2, bias=False)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(w1))
        net[1].weight.copy_(torch.from_numpy(w2))
    x = np.array([[1.0, 2.0, -1.0], [0.5, -0.5, 2.0], [-1.0, 1.0, 0.5], [2.0, 0.0, 1.0]])
    y = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-1.0, 2.0]])

    def grads(xb, yb):
        h = xb @ w1.T
        f = h @ w2.T
        d_f = 2.0 * (f - yb) / f.size                       # MSELoss(reduction='mean')
        return (d_f @ w2).T @ xb, d_f.T @ h                  # dW1, dW2

    halves = [grads(x[:2], y[:2]), grads(x[2:], y[2:])]
    expected = 0.0
    for layer in range(2):
        g = np.stack([halves[0][layer].ravel(), halves[1][layer].ravel()])
        std = g.std(axis=0)                                  # population std, as the paper
        keep = std > 0
        expected += math.log(np.sum(np.abs(g).mean(axis=0)[keep] / std[keep]))
    adapter = TorchAdapter(torch.from_numpy(x), torch.from_numpy(y), loss_fn=nn.MSELoss())
    assert ZiCo().score(net, adapter) == pytest.approx(expected, rel=TOL)
    # two halves: mean|g| / std = (|g1| + |g2|) / |g1 − g2| ≥ 1 per weight, so > log 12 + log 8
    assert expected > math.log(12) + math.log(8)


def test_zico_needs_as_many_images_as_splits_and_varying_gradients():
    net = nn.Linear(3, 2).double()
    one = TorchAdapter(torch.ones(1, 3, dtype=torch.float64), torch.zeros(1, 2, dtype=torch.float64),
                       loss_fn=nn.MSELoss())
    (result,) = compute_proxies(net, one, ["zico"])
    assert result.value is None and "fewer than splits" in result.error
    same = TorchAdapter(torch.ones(4, 3, dtype=torch.float64),
                        torch.zeros(4, 2, dtype=torch.float64), loss_fn=nn.MSELoss())
    (result,) = compute_proxies(net, same, ["zico"])      # identical halves: std 0 everywhere
    assert result.value is None and "varies" in result.error


# --- ID variants -----------------------------------------------------------------------

def test_scale_weights_follow_maedet_by_stride():
    assert DEFAULT_SCALE_WEIGHTS == {2: 0.0, 4: 0.0, 8: 1.0, 16: 1.0, 32: 6.0}
    assert [scale_weight(s, DEFAULT_SCALE_WEIGHTS) for s in (1, 4, 8, 16, 32, 64)] == \
        [0.0, 0.0, 1.0, 1.0, 6.0, 6.0]


def test_id_width_norm_weights_per_channel_id_by_stride():
    gen = torch.Generator().manual_seed(0)
    f1 = torch.randn(2, 3, 8, 8, generator=gen).double()                 # stride 1
    f2 = torch.randn(2, 5, 4, 4, generator=gen).double()                 # stride 2
    f2[:, 4] = 2.0 * f2[:, 0]                                            # rank 4 of 5
    adapter = TorchAdapter(torch.zeros(2, 3, 8, 8, dtype=torch.float64),
                           feature_fn=lambda _m, _x: [f1, f2])
    proxy = IDWidthNorm(scale_weights={1: 1.0, 2: 3.0}, layers="features", max_positions=None)
    expected = _np_dof(_np_samples(f1)) / 3 + 3.0 * _np_dof(_np_samples(f2)) / 5
    assert proxy.score(nn.Identity(), adapter) == pytest.approx(expected, rel=1e-9)
    assert _np_dof(_np_samples(f2)) < 4.01
    # MAE-DET's default gives strides 1 and 2 no weight
    assert IDWidthNorm(layers="features").score(nn.Identity(), adapter) == 0.0


def _kaiming_like_twin(net: nn.Module, seed: int) -> None:
    torch.manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    m.bias.zero_()


def test_id_gauss_rel_is_one_for_the_twin_itself_and_matches_numpy_for_rank_one():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=1))
    _kaiming_like_twin(net, seed=7)                 # the model *is* its own Gaussian twin
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    adapter = TorchAdapter(x, feature_modules=["1", "2"])
    assert IDGaussRel(seed=7).score(net, adapter) == 1.0
    assert IDGaussRel(seed=8).score(net, adapter) != 1.0

    # a rank-1 1×1 conv: own N = 1/(1 + 1e-3); the twin's N from the same draw, by NumPy
    conv = nn.Conv2d(3, 3, 1, bias=False).double()
    u, v = torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, 0.2, -1.0])
    with torch.no_grad():
        conv.weight.copy_(torch.outer(u, v).view(3, 3, 1, 1))
    xd = torch.randn(2, 3, 6, 6, generator=torch.Generator().manual_seed(1)).double()
    twin_w = torch.empty(3, 3, 1, 1, dtype=torch.float64)
    torch.manual_seed(0)
    nn.init.kaiming_normal_(twin_w, mode="fan_in", nonlinearity="relu")
    twin_out = _np_samples(xd) @ twin_w.view(3, 3).numpy().T
    expected = (1.0 / 1.001) / _np_dof(twin_out)
    proxy = IDGaussRel(seed=0, layers="features", max_positions=None)
    assert proxy.score(conv, TorchAdapter(xd)) == pytest.approx(expected, rel=1e-9)


def test_id_dynamics_is_zero_without_learning_and_matches_a_hand_trained_copy():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 3, 1)).double()
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(3, 3, 6, 6, generator=gen).double()
    y = torch.randn(3, 3, 6, 6, generator=gen).double()
    adapter = TorchAdapter(x, y, loss_fn=nn.MSELoss(), feature_modules=["1", "2"])
    kw = dict(layers="features", max_positions=None)
    assert IDDynamics(steps=3, lr=0.0, **kw).score(net, adapter) == 0.0

    def util(model):
        with torch.no_grad():
            maps = [model[1](model[0](x)), model(x)]
        return np.mean([_np_dof(_np_samples(m)) / m.shape[1] for m in maps])

    copy_ = __import__("copy").deepcopy(net)
    opt = torch.optim.SGD(copy_.parameters(), lr=0.5, momentum=0.9)
    for _ in range(3):
        opt.zero_grad()
        loss = nn.functional.mse_loss(copy_(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(copy_.parameters()), 10.0)
        opt.step()
    expected = util(copy_) - util(net)
    value = IDDynamics(steps=3, lr=0.5, **kw).score(net, adapter)
    assert value == pytest.approx(expected, abs=1e-9)
    assert abs(expected) > 1e-3                          # the steps did move the spectrum


# --- the tiny detector through MMDetAdapter -------------------------------------------

@pytest.fixture(scope="module")
def tiny_detector():
    pytest.importorskip("mmdet")
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    from nasdet.models.utils.build import build_detector
    from nasdet.proxies import MMDetAdapter
    from nasdet.train.config import load_config

    model = build_detector(load_config(ROOT / "configs" / "tiny_faster_rcnn_synth.py"), seed=0)
    gen = torch.Generator().manual_seed(0)
    inputs, samples = [], []
    for _ in range(2):
        inputs.append(torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8, generator=gen))
        sample = DetDataSample(metainfo=dict(img_shape=(128, 128), ori_shape=(128, 128),
                                             scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.tensor([[10.0, 12.0, 60.0, 70.0], [40.0, 30.0, 90.0, 88.0]]),
            labels=torch.tensor([1, 3]))
        samples.append(sample)
    return model, MMDetAdapter(model, dict(inputs=inputs, data_samples=samples))


def test_new_proxies_on_the_tiny_detector(tiny_detector):
    model, adapter = tiny_detector
    model.eval()
    with torch.no_grad():
        widths = [s.shape[1] for s in adapter.stage_features(model, adapter.inputs())]
    assert widths == [32, 64, 128, 256]
    model.train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    specs = [dict(type=n, steps=2) if n == "id_dynamics" else n for n in NEW]
    values = {}
    for r in compute_proxies(model, adapter, specs):
        assert r.ok, f"{r.name}: {r.error}"
        values[r.name] = r.value
    # per-stage entropies lie in [0, log C]; MeCo's terms in [0, 1] (up to rounding)
    assert 0 < values["azns_expressivity"] <= sum(math.log(c) for c in widths)
    assert values["azns_trainability"] <= 0.0
    n_convs = sum(isinstance(m, nn.Conv2d) for m in model.backbone.modules()) + \
        sum(isinstance(m, nn.Conv2d) for m in model.neck.modules())
    assert -1e-6 * n_convs <= values["meco"] <= n_convs
    # stages 0,1,1,6 and FPN P2..P6 0,1,1,6,6 bound the weighted per-channel ID
    assert 0 < values["id_width_norm"] <= 8 + 14
    assert values["id_gauss_rel"] > 0 and values["zico"] > 0
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert [m.training for m in model.modules()] == flags
    assert all(p.grad is None for p in model.parameters())
