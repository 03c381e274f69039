"""Joining a Ray cluster, or starting a private one bound to localhost."""

from __future__ import annotations

import socket

from nasdet.errors import NasdetError

#: Seconds to wait for a TCP connection to a cluster head before giving up.
PROBE_TIMEOUT_S = 3.0


def connect_ray(address: str | None, *, verbose: bool = False) -> bool:
    """Connect to the cluster at ``address``, or start a private local Ray instance.

    Without an address the instance is private (``address='local'`` never joins another
    session's cluster), listens on 127.0.0.1 only and has no dashboard.

    Args:
        address: ``HOST:PORT`` of a running cluster's head (``ray start --head``), or None.
        verbose: Forward the workers' logs to this process.

    Returns:
        True when this call started Ray (the caller shuts it down), False when Ray was
        already initialised in this process.

    Raises:
        NasdetError: The cluster cannot be reached (naming ``--address``).
    """
    import ray

    if ray.is_initialized():
        return False
    if address:
        from ray.exceptions import AuthenticationError

        probe_address(address)
        try:
            ray.init(address=address, logging_level="WARNING", log_to_driver=verbose)
        except (ConnectionError, RuntimeError, TimeoutError, AuthenticationError) as exc:
            hint = ""
            if "authentication" in f"{exc} {exc.__cause__}".lower():
                hint = ("; the cluster wants its token: set RAY_AUTH_MODE=token and give "
                        "this machine the head's ~/.ray/auth_token (or RAY_AUTH_TOKEN)")
            raise NasdetError(f"cannot connect to the Ray cluster at {address!r}: "
                              f"{_first_line(exc)}{hint}", key="--address") from None
    else:
        ray.init(address="local", _node_ip_address="127.0.0.1", include_dashboard=False,
                 dashboard_host="127.0.0.1", logging_level="WARNING", log_to_driver=verbose)
    return True


def probe_address(address: str, timeout: float = PROBE_TIMEOUT_S) -> None:
    """Fail fast when nothing listens at a Ray cluster address.

    ``ray.init`` retries an unreachable address for a long time; a TCP connect to the
    head's GCS port answers within ``timeout``. ``auto`` is left to ``ray.init``.

    Args:
        address: ``HOST:PORT``, ``ray://HOST:PORT`` or ``auto``.
        timeout: Seconds to wait for the TCP connection.

    Raises:
        NasdetError: naming ``--address``.
    """
    if address == "auto":
        return
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise NasdetError(f"expected HOST:PORT of the Ray head (e.g. 10.0.0.1:6379), got "
                          f"{address!r}", key="--address")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise NasdetError(
            f"no Ray cluster reachable at {address} ({exc.strerror or exc}); start one with "
            "`ray start --head --port=PORT` or fix the address", key="--address") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
