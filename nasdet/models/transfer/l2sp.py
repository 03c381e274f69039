"""L2-SP: pull fine-tuned weights towards their pretrained starting point.

Li, Grandvalet, Davoine, "Explicit Inductive Bias for Transfer Learning with
Convolutional Networks", ICML 2018. The regulariser is

    Omega(w) = alpha/2 * ||w_S - w_S^0||^2 + beta/2 * ||w_new||^2

with ``w_S`` the parameters shared with the source network (here: the backbone),
``w_S^0`` their pretrained values, and ``w_new`` the parameters the source does not
have (neck, heads). It *replaces* ordinary weight decay: the shared parameters are no
longer decayed towards 0 but towards ``w_S^0``.
"""

from __future__ import annotations

import torch
from mmdet.registry import MODELS
from torch import Tensor, nn

from nasdet.errors import NasdetError
from nasdet.models.transfer.wrapper import DetectorWrapper


def l2sp_penalty(params: list[Tensor], references: list[Tensor], alpha: float) -> Tensor:
    """``alpha / 2 * sum_i ||params[i] - references[i]||^2``.

    Args:
        params: Current parameters.
        references: Their starting values (same shapes).
        alpha: Strength.

    Returns:
        A scalar tensor (float32; differentiable in ``params``).

    Example:
        >>> p = [torch.tensor([1.0, 3.0])]
        >>> float(l2sp_penalty(p, [torch.tensor([0.0, 1.0])], alpha=0.5))
        1.25
    """
    if not params:
        return torch.zeros(())
    total = sum(
        (p.float() - r.float()).pow(2).sum() for p, r in zip(params, references, strict=True)
    )
    return 0.5 * alpha * total


@MODELS.register_module()
class L2SPDetector(DetectorWrapper):
    """A detector trained with the L2-SP penalty on its pretrained part.

    The reference ``w_S^0`` is a copy of the ``source`` module's parameters taken
    right after :meth:`init_weights` (i.e. after the pretrained checkpoint is loaded),
    or at the first ``loss`` call if ``init_weights`` was never called. The copies are
    non-persistent buffers: checkpoints keep the plain detector's keys, and on resume
    mmengine's Runner re-runs ``init_weights`` (re-capturing the pretrained values)
    before loading the trained weights. With ``load_from`` the reference stays the
    pretrained weights, not the loaded ones.

    ``loss_l2sp = alpha/2 * sum ||w - w^0||^2`` over the trainable parameters of
    ``source`` is added to the losses; it is exactly 0 at the start. The ``beta``
    term and the removal of weight decay from ``source`` are optimizer settings
    (``paramwise_cfg.custom_keys``), which :func:`nasdet.transfer.apply_transfer`
    writes into the config: SGD's ``weight_decay=beta`` is the gradient of
    ``beta/2 * ||w_new||^2``.

    Args:
        detector: Detector config.
        alpha: Strength of the pull towards the pretrained weights.
        source: Name of the submodule holding the pretrained parameters ``w_S``.
        data_preprocessor: See :class:`DetectorWrapper`.
        init_cfg: See :class:`DetectorWrapper`.
    """

    def __init__(
        self,
        detector: dict,
        alpha: float = 0.01,
        source: str = "backbone",
        data_preprocessor: dict | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(detector, data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if not alpha >= 0:
            raise NasdetError(f"must be >= 0, got {alpha!r}", key="model.alpha")
        self.alpha = float(alpha)
        self.source = source
        try:
            src = self.get_submodule(source)
        except AttributeError:
            raise NasdetError(
                f"the detector has no submodule {source!r}", key="model.source"
            ) from None
        self._check_own_name("l2sp_reference")
        self.l2sp_reference = nn.Module()
        self._names = [name for name, _ in src.named_parameters()]
        for name, param in src.named_parameters():
            self.l2sp_reference.register_buffer(
                name.replace(".", "__"), torch.zeros_like(param), persistent=False
            )
        self.reference_ready = False

    def _pairs(self) -> list[tuple[nn.Parameter, Tensor]]:
        src = self.get_submodule(self.source)
        params = dict(src.named_parameters())
        return [
            (params[n], getattr(self.l2sp_reference, n.replace(".", "__"))) for n in self._names
        ]

    @torch.no_grad()
    def reset_reference(self) -> None:
        """Take the current ``source`` parameters as ``w_S^0``."""
        for param, ref in self._pairs():
            ref.copy_(param)
        self.reference_ready = True

    def init_wrapper_weights(self) -> None:
        """Capture the reference after the detector (and its pretrained weights) is loaded."""
        self.reset_reference()

    def l2sp_penalty(self) -> Tensor:
        """``alpha/2 * sum ||w - w^0||^2`` over the trainable ``source`` parameters."""
        pairs = [(p, r) for p, r in self._pairs() if p.requires_grad]
        return l2sp_penalty([p for p, _ in pairs], [r for _, r in pairs], self.alpha)

    def loss(self, batch_inputs: Tensor, batch_data_samples: list) -> dict:
        """The detector's losses plus ``loss_l2sp``."""
        if not self.reference_ready:
            self.reset_reference()
        losses = super().loss(batch_inputs, batch_data_samples)
        losses["loss_l2sp"] = self.l2sp_penalty()
        return losses
