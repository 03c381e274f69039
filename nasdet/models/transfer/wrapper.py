"""A detector wrapper that keeps the wrapped detector's parameter names."""

from __future__ import annotations

from typing import Any

from mmdet.models.detectors import BaseDetector
from mmdet.registry import MODELS
from torch import Tensor, nn

from nasdet.errors import NasdetError


class DetectorWrapper(BaseDetector):
    """Base of nasdet's transfer wrappers: an mmdet detector plus extra behaviour.

    The wrapped detector is built from ``detector`` and its submodules (``backbone``,
    ``neck``, ``rpn_head``, ``roi_head``, ``bbox_head``, ...) are registered on the
    wrapper *under the same names*, while the detector object itself is held by
    reference only. So a wrapped model has the state-dict keys of the plain detector
    (``backbone.layer1.0.conv1.weight``, not ``detector.backbone...``): its checkpoints
    load into the base config, ``load_from`` a plain detector checkpoint works, and
    forward hooks selected by module name (eigenspectrum probes) match in both.
    Subclasses add their own modules or buffers next to them.

    ``loss``/``predict``/``_forward``/``extract_feat`` run the detector's own methods;
    attributes the wrapper lacks (``train_cfg``, ``with_rpn``, ...) are looked up on
    the detector. Wrappers nest (``detector`` may itself be a wrapper config).

    Args:
        detector: Config of any mmdet detector (or an already built one).
        data_preprocessor: Overrides the detector's data preprocessor; by default the
            detector's is used (it is the same module object).
        init_cfg: Unused by the wrapper itself (the detector's ``init_cfg`` applies).
    """

    def __init__(
        self,
        detector: dict | nn.Module,
        data_preprocessor: dict | nn.Module | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        det = MODELS.build(detector) if isinstance(detector, dict) else detector
        if not isinstance(det, BaseDetector):
            raise NasdetError(
                f"must build an mmdet detector, got {type(det).__name__}", key="model.detector"
            )
        if any(True for _ in det.parameters(recurse=False)) or any(
            True for _ in det.buffers(recurse=False)
        ):
            raise NasdetError(
                f"{type(det).__name__} holds parameters outside its submodules; "
                "it cannot be wrapped",
                key="model.detector",
            )
        if isinstance(data_preprocessor, dict):
            data_preprocessor = MODELS.build(data_preprocessor)
        if data_preprocessor is None:
            data_preprocessor = det.data_preprocessor
        super().__init__(data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        for name, child in det.named_children():
            if name != "data_preprocessor":
                self.add_module(name, child)
        # Set last: attribute look-ups fall back to the detector once it is set.
        object.__setattr__(self, "_detector", det)

    # ------------------------------------------------------------------ plumbing
    @property
    def detector(self) -> BaseDetector:
        """The wrapped detector (its submodules are this wrapper's submodules)."""
        return self._detector

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            det = self.__dict__.get("_detector")
            if det is None or name.startswith("__"):
                raise
            return getattr(det, name)

    def _check_own_name(self, name: str) -> None:
        """Refuse a wrapper attribute that would shadow a detector submodule."""
        if name in dict(self._detector.named_children()):
            raise NasdetError(
                f"the wrapped detector already has a submodule named {name!r}",
                key="model.detector",
            )

    def train(self, mode: bool = True) -> DetectorWrapper:
        """Set the mode of the wrapper and of the detector object."""
        super().train(mode)
        self._detector.train(mode)
        return self

    def init_weights(self) -> None:
        """Initialise the detector (pretrained loading included), then the wrapper's parts."""
        self._detector.init_weights()
        self.init_wrapper_weights()
        self._is_init = True

    def init_wrapper_weights(self) -> None:
        """Initialise what the wrapper adds; runs after the detector is initialised."""

    # ------------------------------------------------------------------ detector API
    def loss(self, batch_inputs: Tensor, batch_data_samples: list) -> dict:
        """The detector's losses (subclasses add their terms)."""
        return self._detector.loss(batch_inputs, batch_data_samples)

    def predict(self, batch_inputs: Tensor, batch_data_samples: list, rescale: bool = True):
        """The detector's predictions."""
        return self._detector.predict(batch_inputs, batch_data_samples, rescale=rescale)

    def _forward(self, batch_inputs: Tensor, batch_data_samples: list | None = None):
        return self._detector._forward(batch_inputs, batch_data_samples)

    def extract_feat(self, batch_inputs: Tensor):
        """The detector's features (backbone and neck)."""
        return self._detector.extract_feat(batch_inputs)


def unwrap_detector(model: nn.Module) -> nn.Module:
    """The innermost detector under nested :class:`DetectorWrapper` s."""
    while isinstance(model, DetectorWrapper):
        model = model.detector
    return model
