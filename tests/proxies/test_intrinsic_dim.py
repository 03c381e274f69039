"""ID proxies against NumPy: covariance over images x positions, eigh, N(lambda)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nasdet.proxies import TorchAdapter, compute_proxies
from tests.spectrum._bounds import (
    covariance_bound,
    dof_interval,
    eigenvalue_bound,
    entropy_interval,
)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 6, 3, padding=1))


def _adapter() -> TorchAdapter:
    gen = torch.Generator().manual_seed(1)
    inputs = torch.randn(3, 3, 10, 10, generator=gen)
    targets = torch.randn(3, 6, 10, 10, generator=gen)
    return TorchAdapter(inputs, targets, loss_fn=nn.functional.mse_loss,
                        feature_modules=["2"], stage_modules=["0"])


def _numpy_measures(fmap: torch.Tensor, rel: float = 1e-3) -> dict[str, float]:
    x = fmap.detach().double().permute(0, 2, 3, 1).reshape(-1, fmap.shape[1]).numpy()
    mu = np.clip(np.linalg.eigh(np.cov(x, rowvar=False))[0][::-1], 0, None)
    lam = rel * mu[0]
    p = mu / mu.sum()
    p = p[p > 0]
    # The proxies see fp32 features: their values may differ from these float64 ones by
    # the fp32 covariance's rounding, whose Weyl bound gives each measure's range.
    eps = eigenvalue_bound(covariance_bound(x))
    return {"dof": float(np.sum(mu / (mu + lam))), "channels": fmap.shape[1],
            "entropy": float(-(p * np.log(p)).sum()),
            "dof_range": dof_interval(mu, eps, rel), "entropy_range": entropy_interval(mu, eps)}


def _in_range(value: float, ranges: list[tuple[float, float]], weights: list[float]) -> bool:
    """Whether ``value`` lies in the range of ``sum w_i v_i`` over ``v_i`` in ``ranges``."""
    lo = sum(w * r[0] for w, r in zip(weights, ranges, strict=True))
    hi = sum(w * r[1] for w, r in zip(weights, ranges, strict=True))
    return lo <= value <= hi


@pytest.fixture()
def reference():
    net, adapter = _net(), _adapter()
    net.eval()
    with torch.no_grad():
        stage = net[0](adapter.inputs())
        out = net(adapter.inputs())
    return [_numpy_measures(stage), _numpy_measures(out)]


def test_id_proxies_equal_numpy_reference(reference):
    net, adapter = _net(), _adapter()
    # 100 positions per image: all of them are used (max_positions=4096 > 100).
    scores = {r.name: r.value for r in compute_proxies(
        net, adapter, ["id_sum", "id_mean", "id_util", "spectrum_entropy"])}
    dofs = [m["dof_range"] for m in reference]
    entropies = [m["entropy_range"] for m in reference]
    assert _in_range(scores["id_sum"], dofs, [1, 1])
    assert _in_range(scores["id_mean"], dofs, [0.5, 0.5])
    assert _in_range(scores["id_util"], dofs, [0.5 / 8, 0.5 / 6])
    assert _in_range(scores["spectrum_entropy"], entropies, [0.5, 0.5])
    # The ranges are narrow: a wrong layer or lambda falls outside them.
    assert all(hi - lo < 0.01 * m["dof"] for (lo, hi), m in zip(dofs, reference, strict=True))


def test_id_proxy_layer_choice(reference):
    net, adapter = _net(), _adapter()
    only_stage = compute_proxies(net, adapter, [dict(type="id_mean", layers="stages")])[0]
    assert _in_range(only_stage.value, [reference[0]["dof_range"]], [1])
    assert not _in_range(only_stage.value, [reference[1]["dof_range"]], [1])


def test_id_trained_equals_manual_training_and_leaves_model_alone():
    net, adapter = _net(), _adapter()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    trained = compute_proxies(net, adapter, [dict(type="id_trained", steps=5, lr=0.05)])[0]
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k])

    manual = _net()  # same initial weights; the same 5 SGD steps by hand
    opt = torch.optim.SGD(manual.parameters(), lr=0.05, momentum=0.9)
    for _ in range(5):
        opt.zero_grad()
        loss = nn.functional.mse_loss(manual(adapter.inputs()), adapter.targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(manual.parameters()), 10.0)
        opt.step()
    manual.eval()
    with torch.no_grad():
        dofs = [_numpy_measures(manual[0](adapter.inputs()))["dof_range"],
                _numpy_measures(manual(adapter.inputs()))["dof_range"]]
    assert _in_range(trained.value, dofs, [0.5, 0.5])


def test_dead_layer_gives_zero_not_nan():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
    nn.init.constant_(net[0].weight, -1.0)
    nn.init.constant_(net[0].bias, -1.0)
    adapter = TorchAdapter(torch.rand(2, 3, 4, 4))  # all-positive inputs: ReLU is dead
    result = compute_proxies(net, adapter, ["id_mean", "spectrum_entropy"])
    assert [r.value for r in result] == [0.0, 0.0]
