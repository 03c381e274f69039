"""ID proxies against NumPy: covariance over images x positions, eigh, N(lambda)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nasdet.proxies import TorchAdapter, compute_proxies


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
    return {"dof": float(np.sum(mu / (mu + lam))), "channels": fmap.shape[1],
            "entropy": float(-(p * np.log(p)).sum())}


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
    dofs = [m["dof"] for m in reference]
    assert scores["id_sum"] == pytest.approx(sum(dofs), rel=1e-6)
    assert scores["id_mean"] == pytest.approx(np.mean(dofs), rel=1e-6)
    assert scores["id_util"] == pytest.approx(np.mean([dofs[0] / 8, dofs[1] / 6]),
                                              rel=1e-6)
    assert scores["spectrum_entropy"] == pytest.approx(
        np.mean([m["entropy"] for m in reference]), rel=1e-6)


def test_id_proxy_layer_choice(reference):
    net, adapter = _net(), _adapter()
    only_stage = compute_proxies(net, adapter, [dict(type="id_mean", layers="stages")])[0]
    assert only_stage.value == pytest.approx(reference[0]["dof"], rel=1e-6)


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
        dofs = [_numpy_measures(manual[0](adapter.inputs()))["dof"],
                _numpy_measures(manual(adapter.inputs()))["dof"]]
    assert trained.value == pytest.approx(np.mean(dofs), rel=1e-6)


def test_dead_layer_gives_zero_not_nan():
    net = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU())
    nn.init.constant_(net[0].weight, -1.0)
    nn.init.constant_(net[0].bias, -1.0)
    adapter = TorchAdapter(torch.rand(2, 3, 4, 4))  # all-positive inputs: ReLU is dead
    result = compute_proxies(net, adapter, ["id_mean", "spectrum_entropy"])
    assert [r.value for r in result] == [0.0, 0.0]
