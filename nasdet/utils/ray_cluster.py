"""Joining a Ray cluster, or starting a private one confined to the loopback interface."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator

from nasdet.errors import NasdetError

#: Seconds to wait for a TCP connection to a cluster head before giving up.
PROBE_TIMEOUT_S = 3.0
#: The environment variable ``ray.init()`` (and ``ray job submit``'s drivers) join by.
RAY_ADDRESS_ENV = "RAY_ADDRESS"


def ray_target(address: str | None) -> tuple[str | None, str]:
    """The cluster a search joins, and what named it.

    ``address`` wins; without it a set ``RAY_ADDRESS`` (other than ``local``) names the
    cluster, as it does for ``ray.init()``; otherwise the search starts a private Ray.

    Args:
        address: ``--address``, or None.

    Returns:
        ``(address, "--address")``, ``(address, "RAY_ADDRESS")`` or ``(None, "")``.
    """
    if address:
        return address, "--address"
    env = os.environ.get(RAY_ADDRESS_ENV, "").strip()
    if env and env != "local":
        return env, RAY_ADDRESS_ENV
    return None, ""


def connect_ray(address: str | None, *, verbose: bool = False) -> bool:
    """Connect to the cluster at ``address`` (or ``RAY_ADDRESS``), or start a private Ray.

    The private instance (``address='local'`` never joins another session's cluster)
    has no dashboard, and its node IP is 127.0.0.1, so GCS, raylet, object manager
    and workers listen on the loopback interface only (see :func:`_loopback_node`).

    Args:
        address: ``HOST:PORT`` of a running cluster's head (``ray start --head``),
            ``auto``, ``ray://HOST:PORT``, or None (then ``RAY_ADDRESS``, if set).
        verbose: Forward the workers' logs to this process.

    Returns:
        True when this call started Ray (the caller shuts it down), False when Ray was
        already initialised in this process.

    Raises:
        NasdetError: The cluster cannot be reached (naming ``--address`` or
            ``RAY_ADDRESS``, whichever named it).
    """
    import ray

    if ray.is_initialized():
        return False
    address, key = ray_target(address)
    if address:
        from ray.exceptions import AuthenticationError

        probe_address(address, key=key)
        try:
            ray.init(address=address, logging_level="WARNING", log_to_driver=verbose)
        except (ConnectionError, RuntimeError, TimeoutError, AuthenticationError) as exc:
            hint = ""
            if "authentication" in f"{exc} {exc.__cause__}".lower():
                hint = ("; the cluster wants its token: set RAY_AUTH_MODE=token and give "
                        "this machine the head's ~/.ray/auth_token (or RAY_AUTH_TOKEN)")
            raise NasdetError(f"cannot connect to the Ray cluster at {address!r}: "
                              f"{_first_line(exc)}{hint}", key=key) from None
    else:
        with _loopback_node():
            ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                     dashboard_host="127.0.0.1", logging_level="WARNING",
                     log_to_driver=verbose)
    return True


@contextlib.contextmanager
def _loopback_node() -> Iterator[None]:
    """Keep a private Ray's node IP at 127.0.0.1 while it starts.

    ``ray.init(_node_ip_address='127.0.0.1')`` alone is replaced by the machine's
    address (Ray resolves a loopback address to a reachable one for clusters), and Ray
    binds its GCS, raylet, object manager and worker servers to the node IP. Ray keeps
    loopback when clusters are off (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, read at
    import, so the constant is set too); the daemons it starts here inherit the
    variable. Both are restored afterwards.
    """
    from ray._private import ray_constants

    name = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR
    old_env, old_flag = os.environ.get(name), ray_constants.ENABLE_RAY_CLUSTER
    os.environ[name] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = old_flag
        if old_env is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old_env


def probe_address(address: str, timeout: float = PROBE_TIMEOUT_S, *,
                  key: str = "--address") -> None:
    """Fail fast when nothing listens at a Ray cluster address.

    ``ray.init`` retries an unreachable address for a long time; a TCP connect to the
    head's GCS port answers within ``timeout``. ``auto`` is left to ``ray.init``.

    Args:
        address: ``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``.
        timeout: Seconds to wait for the TCP connection.
        key: What named the address (``--address`` or ``RAY_ADDRESS``), for errors.

    Raises:
        NasdetError: naming ``key``.
    """
    if address == "auto":
        return
    if address.startswith(("http://", "https://")):
        raise NasdetError(
            f"{address!r} is a dashboard address (what `ray job submit` talks to), not the "
            "cluster's; give the head's HOST:PORT (GCS, e.g. 10.0.0.1:6379)", key=key)
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise NasdetError(f"expected HOST:PORT of the Ray head (e.g. 10.0.0.1:6379), got "
                          f"{address!r}", key=key)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise NasdetError(
            f"no Ray cluster reachable at {address} ({exc.strerror or exc}); start one with "
            "`ray start --head --port=PORT` or fix the address", key=key) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
