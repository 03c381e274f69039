"""Proxies against hand-computed values or a second, independent computation.

Every case is small enough that the expected number is derived in the test (NumPy
forward/backward, closed forms for linear chains, hand-built activation codes).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from nasdet.errors import NasdetError
from nasdet.models.utils.macs import count_macs
from nasdet.proxies import (
    NASWOT,
    PROXIES,
    GradNorm,
    MACs,
    MAEDet,
    Params,
    Proxy,
    Snip,
    SynFlow,
    TorchAdapter,
    Zen,
    compute_proxies,
    hamming_kernel,
    registered_proxies,
    sum_losses,
)

BASELINES = ["grad_norm", "macs", "maedet", "naswot", "params", "snip", "synflow", "zen"]


def _fixed_mlp() -> tuple[nn.Sequential, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Linear(3→4) → ReLU → Linear(4→2) with fixed, mixed-sign weights and biases."""
    w1 = np.array([[0.5, -1.0, 0.25], [1.5, 0.5, -0.5], [-0.75, 0.25, 1.0], [0.2, 0.3, -0.4]])
    b1 = np.array([0.1, -0.2, 0.05, 0.0])
    w2 = np.array([[1.0, -0.5, 0.75, 2.0], [-1.25, 0.5, 0.3, -0.6]])
    b2 = np.array([0.3, -0.1])
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        net[0].weight.copy_(torch.from_numpy(w1))
        net[0].bias.copy_(torch.from_numpy(b1))
        net[2].weight.copy_(torch.from_numpy(w2))
        net[2].bias.copy_(torch.from_numpy(b2))
    return net, w1, b1, w2, b2


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
    y = torch.tensor([0, 1, 2, 3])
    return TorchAdapter(x, y, loss_fn=nn.CrossEntropyLoss(), feature_modules=["2", "6"])


# --- registry and contract -------------------------------------------------------------

def test_registry_holds_every_baseline_with_its_contract():
    assert set(BASELINES) <= set(registered_proxies())
    for name in BASELINES:
        proxy = PROXIES.build(dict(type=name))
        assert isinstance(proxy, Proxy)
        assert proxy.name == name
        assert proxy.mode in ("train", "eval")
        assert proxy.needs in ("loss", "features", "none")
        assert proxy.reference
    assert PROXIES.build(dict(type="grad_norm", aggregate="global")).aggregate == "global"


def test_compute_proxies_rejects_unknown_names_before_running():
    net, *_ = _fixed_mlp()
    adapter = TorchAdapter(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(NasdetError, match="unknown proxy"):
        compute_proxies(net, adapter, ["params", "no_such_proxy"])
    with pytest.raises(NasdetError, match="cannot build"):
        compute_proxies(net, adapter, [dict(type="zen", bogus=1)])


class _Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def test_compute_proxies_records_failures_and_continues():
    torch.manual_seed(0)
    nan_net = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2), _Scale(float("nan")))
    adapter = TorchAdapter(torch.randn(6, 4), torch.randn(6, 2), loss_fn=nn.MSELoss())
    results = compute_proxies(nan_net, adapter, ["params", "grad_norm", Snip()])
    by_name = {r.name: r for r in results}
    assert [r.name for r in results] == ["params", "grad_norm", "snip"]
    assert by_name["params"].ok and by_name["params"].value == 4 * 4 + 4 + 4 * 2 + 2
    for name in ("grad_norm", "snip"):
        assert by_name[name].value is None
        assert by_name[name].error == "non-finite score: nan"
    assert all(r.seconds >= 0 for r in results)

    no_relu = nn.Sequential(nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 2))
    results = compute_proxies(no_relu, adapter, ["naswot", "params", "grad_norm"])
    assert results[0].value is None
    assert results[0].error.startswith("NasdetError") and "ReLU" in results[0].error
    assert results[1].value == 4 * 4 + 4 + 4 * 2 + 2
    assert results[2].ok and results[2].value > 0


class _BreaksThenRaises(Proxy):
    name, mode, needs, unit = "breaks", "train", "none", "x"

    def compute(self, model, adapter):
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(-7.0)
        model.double()
        raise RuntimeError("boom")


def test_failing_proxy_is_recorded_and_the_model_restored():
    net = _small_convnet().eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    results = compute_proxies(net, _convnet_adapter(), [_BreaksThenRaises(), "params"])
    assert results[0].to_dict() == {"name": "breaks", "value": None, "unit": "x",
                                    "seconds": results[0].seconds, "error": "RuntimeError: boom"}
    assert results[1].ok and results[1].unit == "parameters"
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]) and value.dtype == state[key].dtype, key
    assert not any(m.training for m in net.modules())


def test_gradient_proxies_work_under_no_grad():
    net, *_ = _fixed_mlp()
    adapter = TorchAdapter(torch.ones(2, 3, dtype=torch.float64),
                           torch.zeros(2, 2, dtype=torch.float64), loss_fn=nn.MSELoss())
    expected = [Snip().score(net, adapter), SynFlow().score(net, adapter)]
    with torch.no_grad():
        assert [Snip().score(net, adapter), SynFlow().score(net, adapter)] == expected


def test_sum_losses_follows_parse_losses():
    losses = {
        "loss_cls": torch.tensor([1.0, 3.0]),             # mean 2
        "loss_bbox": [torch.tensor(0.5), torch.tensor([1.0, 2.0])],  # 0.5 + 1.5
        "acc": torch.tensor(90.0),                         # ignored: no 'loss' in key
    }
    assert float(sum_losses(losses)) == pytest.approx(4.0)
    with pytest.raises(NasdetError):
        sum_losses({"acc": torch.tensor(1.0)})


@pytest.mark.parametrize("name", BASELINES)
@pytest.mark.parametrize("initial_mode", ["train", "eval"])
def test_proxy_leaves_weights_grads_modes_and_rng_unchanged(name, initial_mode):
    net = _small_convnet()
    net.train(initial_mode == "train")
    net[3].train(initial_mode != "train")        # a sub-module in the other mode
    net[9].bias.requires_grad_(False)            # a frozen parameter
    existing = torch.full_like(net[0].weight, 0.5)
    net[0].weight.grad = existing                # a gradient the caller already had
    state = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [m.training for m in net.modules()]
    requires = [p.requires_grad for p in net.parameters()]
    rng = torch.get_rng_state()

    (result,) = compute_proxies(net, _convnet_adapter(), [name])

    assert result.ok, result.error
    for key, value in net.state_dict().items():
        assert torch.equal(value, state[key]), key
        assert value.dtype == state[key].dtype
    assert [m.training for m in net.modules()] == flags
    assert [p.requires_grad for p in net.parameters()] == requires
    assert net[0].weight.grad is existing and torch.all(existing == 0.5)
    assert all(p.grad is None for p in list(net.parameters())[1:])
    assert torch.equal(torch.get_rng_state(), rng)


@pytest.mark.parametrize("name", ["zen", "maedet", "grad_norm", "naswot"])
def test_proxy_is_reproducible_under_its_seed(name):
    net, adapter = _small_convnet(), _convnet_adapter()
    first = PROXIES.build(dict(type=name)).score(net, adapter)
    assert PROXIES.build(dict(type=name)).score(net, adapter) == first
    if name in ("zen", "maedet"):
        assert PROXIES.build(dict(type=name, seed=1)).score(net, adapter) != first


# --- params and MACs ------------------------------------------------------------------

def test_params_counts_trainable_parameters_once():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 4))
    adapter = TorchAdapter(torch.zeros(1, 3, 3, 3))
    # conv 8·3·3·3 + 8 = 224, BN 8 + 8 = 16, linear 8·4 + 4 = 36
    assert Params().score(net, adapter) == 224 + 16 + 36
    net[1].requires_grad_(False)
    assert Params().score(net, adapter) == 224 + 36
    assert Params(trainable_only=False).score(net, adapter) == 224 + 16 + 36
    shared = nn.Linear(5, 5)
    assert Params().score(nn.Sequential(shared, shared), adapter) == 30


def _macs_net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),                       # 16×16 out
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2),   # 8×8 out
        nn.ConvTranspose2d(8, 4, 2, stride=2),               # 16×16 out
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 6),
    )


def test_macs_count_matches_hand_count():
    conv1 = 8 * 16 * 16 * 3 * 3 * 3          # out elements × in/groups × k²
    grouped = 8 * 8 * 8 * (8 // 2) * 3 * 3
    transposed = 8 * 8 * 8 * 4 * 2 * 2       # in elements × out/groups × k²
    linear = 6 * 4
    per_image = conv1 + grouped + transposed + linear
    net = _macs_net()
    adapter = TorchAdapter(torch.randn(3, 3, 16, 16))
    assert MACs().score(net, adapter) == per_image
    assert count_macs(net, adapter.inputs()) == 3 * per_image   # the one counter, whole batch


def test_macs_leave_out_elementwise_ops():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 4, 3, stride=2), nn.Flatten(), nn.Linear(4 * 7 * 7, 5))
    adapter = TorchAdapter(torch.randn(2, 3, 16, 16))
    hand = 8 * 16 * 16 * 27 + 4 * 7 * 7 * 8 * 9 + 5 * 196   # BatchNorm and ReLU not counted
    assert MACs().score(net, adapter) == hand


# --- gradient proxies -----------------------------------------------------------------

def _numpy_mse_grads(x, y, w1, b1, w2, b2):
    h = x @ w1.T + b1
    a = np.maximum(h, 0.0)
    f = a @ w2.T + b2
    d_f = 2.0 * (f - y) / f.size            # MSELoss(reduction='mean')
    d_w2 = d_f.T @ a
    d_h = (d_f @ w2) * (h > 0)
    d_w1 = d_h.T @ x
    return d_w1, d_w2


def test_grad_norm_and_snip_match_numpy_backprop():
    net, w1, b1, w2, b2 = _fixed_mlp()
    x = np.array([[1.0, 2.0, -1.0], [0.5, -0.5, 2.0], [-1.0, 1.0, 0.5], [2.0, 0.0, 1.0],
                  [0.3, -1.2, -0.7]])
    y = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5], [-1.0, 2.0], [0.2, -0.3]])
    adapter = TorchAdapter(torch.from_numpy(x), torch.from_numpy(y), loss_fn=nn.MSELoss())
    d_w1, d_w2 = _numpy_mse_grads(x, y, w1, b1, w2, b2)

    layer_sum = np.linalg.norm(d_w1) + np.linalg.norm(d_w2)
    global_norm = math.sqrt(np.sum(d_w1 ** 2) + np.sum(d_w2 ** 2))
    snip = np.abs(w1 * d_w1).sum() + np.abs(w2 * d_w2).sum()
    assert GradNorm().score(net, adapter) == pytest.approx(layer_sum, rel=1e-12)
    assert GradNorm(aggregate="global").score(net, adapter) == pytest.approx(global_norm, rel=1e-12)
    assert Snip().score(net, adapter) == pytest.approx(snip, rel=1e-12)
    assert layer_sum != pytest.approx(global_norm)


def test_gradient_proxies_skip_frozen_weights():
    net, w1, b1, w2, b2 = _fixed_mlp()
    net[0].weight.requires_grad_(False)
    x = np.array([[1.0, 2.0, -1.0], [0.5, -0.5, 2.0]])
    y = np.array([[1.0, 0.0], [0.0, 1.0]])
    adapter = TorchAdapter(torch.from_numpy(x), torch.from_numpy(y), loss_fn=nn.MSELoss())
    _, d_w2 = _numpy_mse_grads(x, y, w1, b1, w2, b2)
    assert GradNorm().score(net, adapter) == pytest.approx(np.linalg.norm(d_w2), rel=1e-12)


# --- SynFlow ---------------------------------------------------------------------------

def test_synflow_of_linear_chain_is_depth_times_path_sum():
    net, w1, _, w2, _ = _fixed_mlp()
    net[0].bias = None
    net[2].bias = None
    adapter = TorchAdapter(torch.randn(5, 3, dtype=torch.float64))
    # R = 1ᵀ|W2||W1|1 is linear in each |W_l|, so Σ_l Σ W_l ⊙ ∂R/∂W_l = L · R (Euler).
    path_sum = np.ones(2) @ np.abs(w2) @ np.abs(w1) @ np.ones(3)
    assert SynFlow().score(net, adapter) == pytest.approx(2 * path_sum, rel=1e-12)
    assert torch.equal(net[0].weight, torch.from_numpy(w1))   # signs restored

    with_bn = nn.Sequential(net[0], nn.BatchNorm1d(4), net[1], net[2]).double()
    with torch.no_grad():
        with_bn[1].weight.fill_(-3.0)
        with_bn[1].running_var.fill_(0.01)
    assert SynFlow().score(with_bn, adapter) == pytest.approx(2 * path_sum, rel=1e-12)


def test_synflow_of_single_valid_conv_is_abs_weight_sum():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, bias=False)
    adapter = TorchAdapter(torch.randn(4, 2, 3, 3))     # one output position per channel
    expected = conv.weight.detach().double().abs().sum().item()
    assert SynFlow().score(conv, adapter) == pytest.approx(expected, rel=1e-12)


def test_synflow_does_not_overflow_on_a_deep_chain():
    torch.manual_seed(0)
    layers = []
    for _ in range(40):
        layers += [nn.Linear(256, 256, bias=False), nn.ReLU()]
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for m in net:
            if isinstance(m, nn.Linear):
                m.weight.fill_(1.0)
    # every path weighs 1: R = 256^41 (float32 would overflow); score = 40 · R
    value = SynFlow().score(net, TorchAdapter(torch.zeros(2, 256)))
    assert math.log(value) == pytest.approx(math.log(40) + 41 * math.log(256), rel=1e-12)


# --- NASWOT ----------------------------------------------------------------------------

_CODES_INPUTS = torch.tensor([[1.0, 1.0, -1.0, -1.0],
                              [1.0, -1.0, 1.0, -1.0],
                              [1.0, 1.0, 1.0, -1.0]])
# codes (x > 0): 1100, 1010, 1110; Hamming distances d12 = 2, d13 = 1, d23 = 1; N_A = 4
# K_H = [[4, 2, 3], [2, 4, 3], [3, 3, 4]]; det = 4·7 − 2·(−1) + 3·(−6) = 12
_DET_ONE_LAYER = 12.0


def _identity_relu(inplace: bool = False) -> nn.Sequential:
    lin = nn.Linear(4, 4, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(4))
    return nn.Sequential(lin, nn.ReLU(inplace=inplace))


class _ReusedReLU(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = _identity_relu()[0]
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.lin(self.relu(self.lin(x))))


def test_hamming_kernel_matches_pairwise_hamming_distances():
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 2, size=(6, 50))
    hamming = (codes[:, None, :] != codes[None, :, :]).sum(-1)
    np.testing.assert_array_equal(hamming_kernel(torch.from_numpy(codes)).numpy(), 50 - hamming)


@pytest.mark.parametrize("inplace", [False, True])
def test_naswot_of_handcrafted_codes(inplace):
    adapter = TorchAdapter(_CODES_INPUTS.clone())
    assert NASWOT().score(_identity_relu(inplace), adapter) == pytest.approx(math.log(_DET_ONE_LAYER))


def test_naswot_concatenates_codes_over_relu_calls():
    # a second identity layer + ReLU repeats the same 4 codes: N_A = 8, K_H doubles,
    # det(2K) = 2³·12 = 96 — whether the second ReLU is a new module or the same one again
    stacked = nn.Sequential(*_identity_relu(), *_identity_relu())
    adapter = TorchAdapter(_CODES_INPUTS.clone())
    assert NASWOT().score(stacked, adapter) == pytest.approx(math.log(96.0))
    assert NASWOT().score(_ReusedReLU(), adapter) == pytest.approx(math.log(96.0))


def test_naswot_identical_codes_give_singular_kernel():
    adapter = TorchAdapter(torch.tensor([[1.0, -1.0, 2.0, -3.0], [2.0, -5.0, 1.0, -1.0]]))
    (result,) = compute_proxies(_identity_relu(), adapter, ["naswot"])
    assert result.value is None and result.error == "non-finite score: -inf"


# --- Zen -------------------------------------------------------------------------------

def test_zen_equals_log_alpha_norm_for_scaled_identity_without_bn():
    d, batch, alpha = 1024, 16, 0.01
    net = nn.Linear(d, d, bias=False)
    with torch.no_grad():
        net.weight.copy_(3.0 * torch.eye(d))
    adapter = TorchAdapter(torch.zeros(batch, d))
    value = Zen(alpha=alpha, gaussian_init=False, seed=5).score(net, adapter)
    # second route, same seed: x then ε are the first two draws; f(x) − f(x+αε) = −3αε
    torch.manual_seed(5)
    torch.randn(batch, d)
    eps = torch.randn(batch, d).double()
    expected = math.log(float((3.0 * alpha * eps).norm(dim=1).mean()))
    assert value == pytest.approx(expected, rel=1e-6)
    # and ‖ε‖ ≈ sqrt(d) (relative spread 1/sqrt(2d) per sample): log Δ ≈ log(3α sqrt(d))
    assert value == pytest.approx(math.log(3 * alpha * math.sqrt(d)), abs=0.02)


class _NormEvalSequential(nn.Sequential):
    """Keeps BatchNorm in eval mode under ``train()``, like mmdet's ``norm_eval=True``."""

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.eval()
        return self


def test_zen_bn_term_and_delta_match_manual_batchnorm():
    d, batch, alpha = 16, 32, 0.01
    scales = torch.linspace(0.5, 4.0, d)
    # Zen must normalise with batch statistics even where norm_eval keeps BN in eval mode
    net = _NormEvalSequential(nn.Linear(d, d, bias=False), nn.BatchNorm1d(d))
    with torch.no_grad():
        net[0].weight.copy_(torch.diag(scales))
    adapter = TorchAdapter(torch.zeros(batch, d))
    value = Zen(alpha=alpha, gaussian_init=False, seed=3).score(net, adapter)

    torch.manual_seed(3)
    x = torch.randn(batch, d).double()
    eps = torch.randn(batch, d).double()
    s = scales.double()

    def bn(h):
        return (h - h.mean(0)) / torch.sqrt(h.var(0, unbiased=False) + 1e-5)

    delta = (bn(x * s) - bn((x + alpha * eps) * s)).norm(dim=1).mean()
    sigma_bar = torch.sqrt((x * s).var(0, unbiased=False).mean())
    assert value == pytest.approx(math.log(delta) + math.log(sigma_bar), rel=1e-4)


def test_zen_with_gaussian_init_matches_closed_form_in_expectation():
    # f = BN(W x), W ~ N(0,1)^{d×d}: BN makes the perturbation ≈ αε, so Δ ≈ α sqrt(d);
    # channel variances ≈ ‖W_j‖² ≈ d, so σ̄ ≈ sqrt(d); Zen ≈ log(α d) (O(1/B²) corrections).
    d, batch, alpha = 256, 64, 0.01
    net = nn.Sequential(nn.Linear(d, d, bias=False), nn.BatchNorm1d(d))
    adapter = TorchAdapter(torch.zeros(batch, d))
    value = Zen(alpha=alpha).score(net, adapter)
    assert value == pytest.approx(math.log(alpha * d), abs=0.03)
    doubled = Zen(alpha=2 * alpha).score(net, adapter)
    assert doubled - value == pytest.approx(math.log(2.0), abs=1e-3)


# --- MAE-DET ---------------------------------------------------------------------------

def test_maedet_matches_numpy_std_of_stage_maps():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, stride=2, padding=1, bias=False),
    )
    with torch.no_grad():
        net[1].weight.fill_(5.0)          # would change the score if BN were kept
    adapter = TorchAdapter(torch.zeros(2, 3, 8, 8), stage_modules=["2", "3"])
    value = MAEDet(stage_weights=(1.0, 2.0), gaussian_init=False, seed=7).score(net, adapter)

    torch.manual_seed(7)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    h1 = torch.relu(torch.nn.functional.conv2d(x, net[0].weight.detach().double(), padding=1))
    h2 = torch.nn.functional.conv2d(h1, net[3].weight.detach().double(), stride=2, padding=1)
    expected = (np.log(np.std(h1.numpy())) + np.log(4)) + 2 * (np.log(np.std(h2.numpy())) + np.log(6))
    assert value == pytest.approx(expected, rel=1e-10)
    no_channels = MAEDet(stage_weights=(1.0, 2.0), channel_term=False, gaussian_init=False,
                         seed=7).score(net, adapter)
    assert value - no_channels == pytest.approx(np.log(4) + 2 * np.log(6), rel=1e-10)


def test_maedet_gaussian_init_std_follows_width_product():
    # no activation, N(0,1) weights, N(0,1) input: var(W1 x) = d0, var(W2 W1 x) = d0 · d1
    d0, d1, d2 = 128, 256, 128
    net = nn.Sequential(nn.Linear(d0, d1, bias=False), nn.Linear(d1, d2, bias=False))
    adapter = TorchAdapter(torch.zeros(256, d0), stage_modules=["0", "1"])
    value = MAEDet(stage_weights=(1.0, 1.0)).score(net, adapter)
    expected = (0.5 * math.log(d0) + math.log(d1)) + (0.5 * math.log(d0 * d1) + math.log(d2))
    assert value == pytest.approx(expected, abs=0.08)


def test_maedet_default_weights_align_to_deepest_stages():
    # the paper's (0, 0, 1, 1, 6) over C1..C5 becomes (1, 6) on two stages
    net = nn.Sequential(nn.Linear(8, 16, bias=False), nn.ReLU(), nn.Linear(16, 8, bias=False))
    adapter = TorchAdapter(torch.zeros(64, 8), stage_modules=["1", "2"])
    first = MAEDet(stage_weights=(1.0, 0.0)).score(net, adapter)
    last = MAEDet(stage_weights=(0.0, 1.0)).score(net, adapter)
    assert MAEDet().score(net, adapter) == pytest.approx(first + 6 * last, rel=1e-12)


def test_maedet_rejects_more_stages_than_weights():
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 4))
    adapter = TorchAdapter(torch.zeros(8, 4), stage_modules=["0", "1", "2"])
    with pytest.raises(NasdetError, match="stage weights"):
        MAEDet(stage_weights=(1.0, 1.0)).score(net, adapter)


def test_torch_adapter_reports_unknown_module_names():
    adapter = TorchAdapter(torch.zeros(1, 4), feature_modules=["nope"])
    with pytest.raises(NasdetError, match="nope"):
        adapter.features(nn.Linear(4, 4), adapter.inputs())
