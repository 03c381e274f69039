"""NASWOT: log-determinant of the Hamming kernel of ReLU activation codes."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from nasdet.errors import NasdetError
from nasdet.proxies.adapters import ModelAdapter
from nasdet.proxies.base import PROXIES, Proxy

__all__ = ["NASWOT", "hamming_kernel"]

#: Activation modules whose binary codes NASWOT reads. For all of them
#: ``output > 0`` if and only if ``input > 0``, so in-place modules are read correctly.
ACTIVATIONS: tuple[type[nn.Module], ...] = (nn.ReLU, nn.ReLU6, nn.LeakyReLU)


def hamming_kernel(codes: Tensor) -> Tensor:
    """``K_H[i, j] = N_A − d_H(c_i, c_j)`` for binary codes ``c`` of shape ``B×N_A``.

    Computed as ``c cᵀ + (1 − c)(1 − c)ᵀ`` (units on which two inputs agree) in float64.

    Args:
        codes: 0/1 tensor, one row per input.
    """
    c = codes.to(torch.float64)
    return c @ c.T + (1.0 - c) @ (1.0 - c).T


@PROXIES.register_module(name="naswot")
class NASWOT(Proxy):
    """Neural Architecture Search without Training score.

    Reference: J. Mellor, J. Turner, A. Storkey, E. J. Crowley, "Neural Architecture
    Search without Training", ICML 2021 (arXiv:2006.04647).

    Definition: one forward pass of the probe batch (``B`` images) through
    ``adapter.features`` in train mode (as the authors score freshly built networks).
    Every call of an ``nn.ReLU``, ``nn.ReLU6`` or ``nn.LeakyReLU`` module contributes the
    binary code ``1[x > 0]`` of each of its ``N`` pre-activation units per input (a module
    called several times, like mmdet's ResNet blocks reusing one ``relu``, contributes
    once per call). Concatenating the codes over all calls gives ``c_i ∈ {0,1}^{N_A}``
    per input ``i``, the kernel ``K_H[i, j] = N_A − d_H(c_i, c_j)`` (``d_H``: Hamming
    distance) and the score ``log |det K_H|``.

    Activations applied functionally (``F.relu``) are not seen. A model with no such
    module raises :class:`~nasdet.errors.NasdetError`; two inputs with identical codes
    make ``K_H`` singular and the score ``-inf`` (recorded as a failure). ``K_H`` is
    ``B×B``: the paper uses ``B = 128``; with a detector probe batch of a few images the
    score mostly reflects ``N_A`` (for ``B = 2``: ``log(d (2 N_A − d))``), so give the
    adapter more images when NASWOT matters.

    Args:
        seed: See :class:`~nasdet.proxies.base.Proxy`.
    """

    name = "naswot"
    reference = "Mellor et al., Neural Architecture Search without Training, ICML 2021"
    mode = "train"
    needs = "features"
    unit = "log"

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        inputs = adapter.inputs()
        batch = int(inputs.shape[0])
        kernel = torch.zeros((batch, batch), dtype=torch.float64)
        calls = 0

        def hook(module: nn.Module, _inp: Any, out: Tensor) -> None:
            nonlocal kernel, calls
            if out.shape[0] != batch:
                raise NasdetError(
                    f"activation output has batch size {out.shape[0]}, expected {batch}",
                    key=type(module).__name__)
            codes = (out.detach() > 0).reshape(batch, -1)
            kernel = kernel + hamming_kernel(codes).cpu()
            calls += 1

        handles = [m.register_forward_hook(hook) for m in model.modules()
                   if isinstance(m, ACTIVATIONS)]
        if not handles:
            raise NasdetError("NASWOT needs nn.ReLU/ReLU6/LeakyReLU modules; the model has none",
                              key=type(model).__name__)
        try:
            with torch.no_grad():
                adapter.features(model, inputs)
        finally:
            for h in handles:
                h.remove()
        if calls == 0:
            raise NasdetError("no ReLU module was called while computing the features",
                              key=type(model).__name__)
        return float(torch.linalg.slogdet(kernel).logabsdet)
