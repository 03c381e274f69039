"""The proxy contract: :class:`Proxy`, the ``PROXIES`` registry and :func:`compute_proxies`.

A proxy turns an untrained (or partly trained) model and a probe batch into one number
that is cheap to compute and, ideally, ranks architectures like their trained accuracy
does. How the model is run (which inputs, which loss, which feature maps) is the
business of a :class:`~nasdet.proxies.adapters.ModelAdapter`; a proxy only knows the
definition from its paper.

Every proxy runs inside a guard that

* puts the model in the mode its definition needs (``Proxy.mode``) and restores the
  original ``training`` flag of *every* sub-module afterwards;
* snapshots all parameters and buffers and copies them back afterwards, so neither
  weight re-initialisation, SynFlow's sign trick nor BatchNorm running statistics
  updated by a train-mode forward leak out;
* stashes existing ``.grad`` tensors and puts them back afterwards, so no gradient is
  left behind and none is lost;
* forks the random-number generators and seeds them (``Proxy.seed``), so scores are
  reproducible and the caller's random stream is untouched.

Intrinsic-dimensionality (ID) proxies built on :mod:`nasdet.spectrum` are registered in
the same ``PROXIES`` registry (``needs='features'``); they live in their own module of
this package and are imported by ``nasdet/proxies/__init__.py``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from nasdet.errors import NasdetError

if TYPE_CHECKING:
    from nasdet.proxies.adapters import ModelAdapter

__all__ = ["PROXIES", "Proxy", "ProxyResult", "compute_proxies", "preserved_state"]

Mode = Literal["train", "eval"]
Needs = Literal["loss", "features", "none"]


class _SimpleRegistry:
    """A minimal stand-in for :class:`mmengine.registry.Registry` (same calling shape).

    Used only when mmengine is not importable.

    Args:
        name: Registry name, used in error messages.
    """

    def __init__(self, name: str):
        self.name = name
        self._module_dict: dict[str, type] = {}

    @property
    def module_dict(self) -> dict[str, type]:
        return self._module_dict

    def __contains__(self, key: str) -> bool:
        return key in self._module_dict

    def __len__(self) -> int:
        return len(self._module_dict)

    def get(self, key: str) -> type | None:
        return self._module_dict.get(key)

    def register_module(
        self, name: str | Sequence[str] | None = None, force: bool = False, module: type | None = None
    ) -> Callable[[type], type] | type:
        def _register(cls: type) -> type:
            names = [cls.__name__] if name is None else [name] if isinstance(name, str) else name
            for key in names:
                if key in self._module_dict and not force:
                    raise KeyError(f"{key} is already registered in {self.name}")
                self._module_dict[key] = cls
            return cls

        if module is not None:
            return _register(module)
        return _register

    def build(self, cfg: Mapping[str, Any], *args: Any, **kwargs: Any) -> Any:
        cfg = dict(cfg)
        key = cfg.pop("type")
        cls = key if isinstance(key, type) else self._module_dict.get(key)
        if cls is None:
            raise KeyError(f"{key} is not in the {self.name} registry")
        return cls(*args, **cfg, **kwargs)


def _make_registry() -> Any:
    try:
        from mmengine.registry import Registry
    except ImportError:  # pragma: no cover - exercised only without mmengine
        return _SimpleRegistry("proxy")
    return Registry("proxy", locations=["nasdet.proxies"])


#: Registry of proxies. ``PROXIES.build(dict(type='synflow'))`` returns a :class:`Proxy`.
#: An :class:`mmengine.registry.Registry` when mmengine imports, else a dict-backed
#: registry with the same ``register_module`` / ``build`` / ``get`` shape.
PROXIES = _make_registry()


@dataclass(frozen=True)
class ProxyResult:
    """The outcome of one proxy on one model.

    Args:
        name: Registered name of the proxy.
        value: The score, or ``None`` when the proxy failed.
        seconds: Wall-clock time the proxy took (seconds, ``time.perf_counter``),
            including its forward/backward passes and the state guard.
        error: ``None`` on success, else ``"ExceptionType: message"`` or
            ``"non-finite score: nan"``.
        unit: What ``value`` counts (e.g. ``"parameters"``, ``"log"``).
    """

    name: str
    value: float | None
    seconds: float
    error: str | None = None
    unit: str = ""

    @property
    def ok(self) -> bool:
        """Whether the proxy produced a finite score."""
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record: ``name``, ``value``, ``unit``, ``seconds``, ``error``."""
        return {"name": self.name, "value": self.value, "unit": self.unit,
                "seconds": self.seconds, "error": self.error}


def _module_training_flags(model: nn.Module) -> list[tuple[nn.Module, bool]]:
    return [(m, m.training) for m in model.modules()]


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[None]:
    """Restore ``model`` exactly as it was: values, grads, ``requires_grad`` and modes.

    Every parameter and buffer is put back as the *same tensor object* it was (so tensors
    held by an optimizer stay valid) with its saved value, dtype and device, even if the
    body replaced it (``model.double()`` swaps buffers for new tensors). Existing
    ``.grad`` tensors are stashed on entry (the body sees ``None``) and put back on exit.
    Changes to the module *structure* (replacing sub-modules) are not undone: proxies
    that need them work on a ``copy.deepcopy`` of the model.

    Args:
        model: The module to protect.
    """
    flags = [(m, m.training) for m in model.modules()]
    slots: list[tuple[dict[str, Any], str, Tensor]] = []
    saved: dict[int, Tensor] = {}
    for module in model.modules():
        for table in (module._parameters, module._buffers):
            for key, tensor in table.items():
                if tensor is None:
                    continue
                slots.append((table, key, tensor))
                if id(tensor) not in saved:
                    saved[id(tensor)] = tensor.detach().clone()
    params = {id(t): t for table, _, t in slots if isinstance(t, nn.Parameter)}
    grads = {i: p.grad for i, p in params.items()}
    requires = {i: p.requires_grad for i, p in params.items()}
    for p in params.values():
        p.grad = None
    try:
        yield
    finally:
        with torch.no_grad():
            restored: set[int] = set()
            for table, key, tensor in slots:
                table[key] = tensor
                if id(tensor) in restored:
                    continue
                restored.add(id(tensor))
                value = saved[id(tensor)]
                if tensor.dtype != value.dtype or tensor.device != value.device:
                    tensor.data = value
                else:
                    tensor.copy_(value)
        for i, p in params.items():
            p.requires_grad_(requires[i])
            p.grad = grads[i]
        for module, flag in flags:
            module.training = flag


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    if seed is None:
        yield
        return
    devices: list[int] = []
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        devices = list(range(torch.cuda.device_count()))
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class Proxy:
    """Base class of every proxy.

    Subclasses set the class attributes and implement :meth:`compute`; callers use
    :meth:`score`, which wraps :meth:`compute` in the mode switch, state guard and
    seeding described in the module docstring.

    Class attributes:
        name: Registered name (``'synflow'``).
        reference: The paper the definition comes from (authors, year, venue).
        mode: ``'train'`` or ``'eval'``: the mode :meth:`score` puts the model in
            (``model.train(mode == 'train')``, which honours overrides such as mmdet's
            ``norm_eval``) before calling :meth:`compute`.
        needs: What the proxy asks the adapter for: ``'loss'``, ``'features'`` or
            ``'none'`` (no loss and no feature semantics; it may still run
            ``adapter.forward``).
        unit: What the score counts, for reports.

    Args:
        seed: Seed for ``torch`` inside the proxy (Gaussian inputs, re-initialisation,
            samplers inside a detector's loss). ``None`` leaves the random state alone.
    """

    name: ClassVar[str] = ""
    reference: ClassVar[str] = ""
    mode: ClassVar[Mode] = "eval"
    needs: ClassVar[Needs] = "none"
    unit: ClassVar[str] = ""

    def __init__(self, seed: int | None = 0):
        self.seed = seed

    def compute(self, model: nn.Module, adapter: ModelAdapter) -> float:
        """Compute the raw score; ``model`` is already in :attr:`mode`. Override this."""
        raise NotImplementedError

    def score(self, model: nn.Module, adapter: ModelAdapter) -> float:
        """Score ``model`` on ``adapter``'s probe batch, leaving the model unchanged.

        Args:
            model: The network to score.
            adapter: How to run it (inputs, loss, feature maps).

        Returns:
            The proxy value as a Python float (may be non-finite; :func:`compute_proxies`
            records that as a failure).
        """
        with preserved_state(model), _seeded(self.seed):
            model.train(self.mode == "train")
            value = self.compute(model, adapter)
        return float(value)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, mode={self.mode!r}, needs={self.needs!r})"


ProxySpec = str | Mapping[str, Any] | Proxy


def _build(spec: ProxySpec) -> Proxy:
    if isinstance(spec, Proxy):
        return spec
    cfg = {"type": spec} if isinstance(spec, str) else dict(spec)
    key = cfg.pop("type", None)
    cls = PROXIES.get(key) if isinstance(key, str) else None
    if cls is None:
        known = ", ".join(sorted(PROXIES.module_dict))
        raise NasdetError(f"unknown proxy; registered proxies: {known}", key=str(key))
    try:
        # Instantiate directly rather than PROXIES.build: build() would switch to the
        # caller's default scope (e.g. 'mmdet' after register_all_modules) and warn.
        proxy = cls(**cfg)
    except TypeError as exc:  # bad keyword argument in a config
        raise NasdetError(f"cannot build proxy: {exc}", key=key) from exc
    if not isinstance(proxy, Proxy):  # pragma: no cover - registry misuse
        raise NasdetError("registered object is not a Proxy", key=key)
    return proxy


def registered_proxies() -> list[str]:
    """Names of all registered proxies, sorted."""
    return sorted(PROXIES.module_dict)


def compute_proxies(
    model: nn.Module,
    adapter: ModelAdapter,
    names: Sequence[ProxySpec] | None = None,
) -> list[ProxyResult]:
    """Run several proxies on one model, recording value, cost and failures.

    Every proxy is built first, so a misspelt name fails before any work is done. A proxy
    that raises, or returns NaN/inf, is recorded with ``value=None`` and the reason in
    ``error``; the others still run.

    Args:
        model: The network to score; it is left exactly as it was.
        adapter: How to run the model (see :mod:`nasdet.proxies.adapters`).
        names: Registered names (``'snip'``), configs (``dict(type='zen', alpha=0.01)``)
            or :class:`Proxy` instances. ``None`` runs every registered proxy.

    Returns:
        One :class:`ProxyResult` per requested proxy, in order.

    Raises:
        NasdetError: A name is not registered or a config has a bad keyword.

    Example:
        >>> import torch
        >>> from nasdet.proxies import TorchAdapter, compute_proxies
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
        >>> adapter = TorchAdapter(torch.randn(8, 4), torch.randn(8, 2), loss_fn=torch.nn.MSELoss())
        >>> [(r.name, r.value) for r in compute_proxies(net, adapter, ["params"])]
        [('params', 23.0)]
    """
    specs = list(names) if names is not None else registered_proxies()
    proxies = [_build(spec) for spec in specs]
    results = []
    for spec, proxy in zip(specs, proxies, strict=True):
        name = proxy.name or (spec if isinstance(spec, str) else type(proxy).__name__)
        start = time.perf_counter()
        try:
            value = proxy.score(model, adapter)
        except Exception as exc:  # noqa: BLE001 - one failing proxy must not stop the rest
            results.append(ProxyResult(name, None, time.perf_counter() - start,
                                       f"{type(exc).__name__}: {exc}", proxy.unit))
            continue
        seconds = time.perf_counter() - start
        if not math.isfinite(value):
            results.append(ProxyResult(name, None, seconds, f"non-finite score: {value}", proxy.unit))
        else:
            results.append(ProxyResult(name, value, seconds, None, proxy.unit))
    return results
