"""SpectrumProbe on small torch models (detectors: test_spectrum_probes_mmdet.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from nasdet.errors import NasdetError
from nasdet.spectrum import SpectrumProbe, StreamingCovariance, select_modules
from tests.spectrum._bounds import (
    assert_covariance_within,
    assert_eigenvalues_within,
    covariance_bound,
    eigenvalue_bound,
)


def _samples(fmaps: list[torch.Tensor]) -> np.ndarray:
    """The samples (images x positions) of one or more (B, C, ...) maps, as float64."""
    c = fmaps[0].shape[1]
    return np.concatenate(
        [f.detach().movedim(1, -1).reshape(-1, c).double().numpy() for f in fmaps])


def _check_cov(got: torch.Tensor, fmaps: list[torch.Tensor]) -> np.ndarray:
    """Assert ``got`` is np.cov of the maps' samples within the fp32 rounding bound."""
    x = _samples(fmaps)
    bound = covariance_bound(x)
    assert_covariance_within(got, np.cov(x, rowvar=False), bound)
    return bound


class Pair(nn.Module):
    """Returns a tuple whose second element is a list with a None, like some mmdet modules."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(8, 6, 1)
        self.b = nn.Conv2d(8, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor | None]]:
        return self.a(x), [self.b(x), None]


class Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.pair = Pair()
        self.shared = nn.Conv2d(6, 6, 1)  # called twice per forward
        self.fc = nn.Linear(6, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        a, (b, _) = self.pair(self.act(self.stem(x)))
        a = self.shared(self.shared(a))
        return self.fc(a.mean(dim=(2, 3))), b


class Reductions(nn.Module):
    """Modules whose outputs have no channel dim (0-D and 1-D)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Conv2d(3, 4, 1)
        self.norm = _Norm()
        self.channel_sum = _ChannelSum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.body(x)
        return self.norm(h) + self.channel_sum(h).sum()


class _Norm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.norm()


class _ChannelSum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum(dim=(0, 2, 3))


@pytest.fixture()
def toy() -> Toy:
    torch.manual_seed(0)
    return Toy()


def _input(b: int = 2, h: int = 9, w: int = 7) -> torch.Tensor:
    return torch.randn(b, 3, h, w, generator=torch.Generator().manual_seed(1))


# ----------------------------------------------------------------------------- toy model
def test_entries_channels_counts_and_values(toy: Toy) -> None:
    x = _input()
    with SpectrumProbe(toy, ["stem", "pair", "shared", "fc"]) as probe:
        toy(x)
    res = probe.results()
    # Execution order; tuple/list elements get .i suffixes, None is skipped.
    assert list(res) == ["stem", "pair.0", "pair.1.0", "shared", "fc"]
    assert {k: r.channels for k, r in res.items()} == {
        "stem": 8,
        "pair.0": 6,
        "pair.1.0": 4,
        "shared": 6,
        "fc": 5,
    }
    positions = 2 * 9 * 7
    assert res["stem"].count == positions
    assert res["shared"].count == 2 * positions  # both calls pooled
    assert res["fc"].count == 2  # (N, C) output: one sample per row

    # Values equal np.cov of the materialised outputs.
    with torch.no_grad():
        stem = toy.stem(x)
        a, (b, _) = toy.pair(toy.act(stem))
        s1 = toy.shared(a)
        s2 = toy.shared(s1)
    accs = probe.accumulators
    stem_bound = _check_cov(accs["stem"].covariance(), [stem])
    _check_cov(accs["pair.1.0"].covariance(), [b])
    _check_cov(accs["shared"].covariance(), [s1, s2])
    ref_eigs = np.linalg.eigh(np.cov(_samples([stem]), rowvar=False))[0][::-1]
    assert_eigenvalues_within(res["stem"].eigenvalues, ref_eigs, eigenvalue_bound(stem_bound))
    assert set(res["stem"].measures) >= {"id_dof", "participation_ratio", "effective_rank"}
    assert res["stem"].to_dict()["eigenvalues"] == res["stem"].eigenvalues.tolist()


def test_outputs_and_gradients_are_unchanged(toy: Toy) -> None:
    x = _input().requires_grad_(True)
    plain = toy(x)
    (plain[0].sum() + plain[1].sum()).backward()
    grad_plain = x.grad.clone()
    weight_grad = toy.stem.weight.grad.clone()
    x.grad = None
    toy.zero_grad()
    with SpectrumProbe(toy, "convs") as probe:
        probed = toy(x)
        (probed[0].sum() + probed[1].sum()).backward()
    assert torch.equal(plain[0], probed[0]) and torch.equal(plain[1], probed[1])
    assert torch.equal(grad_plain, x.grad)
    assert torch.equal(weight_grad, toy.stem.weight.grad)
    for acc in probe.accumulators.values():
        assert not acc.covariance().requires_grad


def test_remove_detaches_every_hook(toy: Toy) -> None:
    x = _input()
    with SpectrumProbe(toy, ["stem", "pair", "convs"]) as probe:
        assert probe.active
        toy(x)
    assert not probe.active
    assert all(not m._forward_hooks for m in toy.modules())
    counts = {k: a.count for k, a in probe.accumulators.items()}
    toy(x)
    assert {k: a.count for k, a in probe.accumulators.items()} == counts
    probe.remove()  # idempotent


def test_presets_and_patterns_select_by_full_name(toy: Toy) -> None:
    assert list(select_modules(toy, "convs")) == ["stem", "pair.a", "pair.b", "shared"]
    assert list(select_modules(toy, r"pair\.[ab]")) == ["pair.a", "pair.b"]
    # Full match: "pair" does not select "pair.a".
    assert list(select_modules(toy, "pair")) == ["pair"]
    # Overlapping entries are selected once.
    assert list(select_modules(toy, ["stem", "convs"])) == ["stem", "pair.a", "pair.b", "shared"]


def test_pattern_without_match_names_pattern_and_available_layers(toy: Toy) -> None:
    with pytest.raises(NasdetError) as err:
        SpectrumProbe(toy, ["stem", r"backbone\.layer\d+"])
    assert err.value.key == r"backbone\.layer\d+"
    assert "matches no module" in str(err.value)
    assert "stem" in str(err.value) and "pair.a" in str(err.value)
    with pytest.raises(NasdetError) as err:
        SpectrumProbe(toy, "fpn")
    assert err.value.key == "fpn" and "preset" in str(err.value)
    with pytest.raises(NasdetError, match="invalid regular expression"):
        SpectrumProbe(toy, "stem(")
    assert all(not m._forward_hooks for m in toy.modules())


@pytest.mark.parametrize("layer", ["norm", "channel_sum"])
def test_output_without_channel_dim_names_the_layer(layer: str) -> None:
    model = Reductions()
    with SpectrumProbe(model, ["body", layer]):
        with pytest.raises(NasdetError) as err:
            model(_input())
    assert err.value.key == layer
    assert "no channel dimension" in str(err.value)


def test_stride_subsampling_counts(toy: Toy) -> None:
    with SpectrumProbe(toy, ["stem", "fc"], stride=2) as probe:
        toy(_input(b=3, h=9, w=7))
    res = probe.results()
    assert res["stem"].count == 3 * 5 * 4  # ceil(9 / 2) * ceil(7 / 2) per image
    assert res["fc"].count == 3  # 2-D outputs are not subsampled
    x = _input(b=3, h=9, w=7)
    with torch.no_grad():
        kept = toy.stem(x)[:, :, ::2, ::2]
    _check_cov(probe.accumulators["stem"].covariance(), [kept])


def test_random_subset_counts_and_is_reproducible(toy: Toy) -> None:
    covs = []
    for seed in (3, 3, 4):
        with SpectrumProbe(toy, "stem", max_positions=10, seed=seed) as probe:
            toy(_input(b=4))
            toy(_input(b=4))
        assert probe.results()["stem"].count == 2 * 4 * 10
        covs.append(probe.accumulators["stem"].covariance())
    assert torch.equal(covs[0], covs[1])
    assert not torch.equal(covs[0], covs[2])
    with SpectrumProbe(toy, "stem", stride=2, max_positions=1000) as probe:
        toy(_input(b=4))
    assert probe.results()["stem"].count == 4 * 5 * 4  # fewer positions than the cap


def test_inference_mode_forward_then_normal_forward(toy: Toy) -> None:
    with SpectrumProbe(toy, "stem") as probe:
        with torch.inference_mode():
            toy(_input())
        toy(_input())  # updates state first created inside inference mode
    assert probe.results()["stem"].count == 2 * 2 * 9 * 7


def test_results_before_forward_and_channel_change_are_errors(toy: Toy) -> None:
    probe = SpectrumProbe(toy, "stem")
    with pytest.raises(NasdetError, match="no probed layer has run"):
        probe.results()
    probe.remove()
    flexible = nn.Sequential(nn.Identity())
    with SpectrumProbe(flexible, "0") as probe:
        flexible(torch.randn(2, 3, 4, 4))
        with pytest.raises(NasdetError) as err:
            flexible(torch.randn(2, 5, 4, 4))
    assert err.value.key == "0" and "channels" in str(err.value)


def test_state_dict_round_trip(toy: Toy) -> None:
    with SpectrumProbe(toy, "convs") as probe:
        toy(_input())
    other = SpectrumProbe(toy, "convs")
    other.remove()
    other.load_state_dict(probe.state_dict())
    for name, acc in probe.accumulators.items():
        assert torch.equal(other.accumulators[name].covariance(), acc.covariance())
        assert isinstance(other.accumulators[name], StreamingCovariance)
