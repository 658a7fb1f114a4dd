"""Starting or joining Ray: network, auth, dashboard (the driver side, before any trial runs).

Ray reads its network and auth settings from the environment when it is imported, so everything
here that sets them runs before the first `import ray`.
"""

from __future__ import annotations

import math
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

LOOPBACK = ("127.0.0.1", "localhost", "::1")
"""Host names that reach only this machine (a dashboard bound to one of them needs no confirmation)."""


class ClusterError(ValueError):
    """Ray cannot be started or joined as asked; the message names the fix."""


@dataclass
class RayOptions:
    """How to reach Ray: a fresh local cluster (address None) or an existing one, and the dashboard. A sweep's
    options of the same names fill it (`SweepSpec.ray_options`)."""

    address: Optional[str] = None
    gpus: Optional[float] = None
    """GPUs of a local cluster; None: every GPU this machine has."""
    dashboard: bool = True
    dashboard_host: str = "127.0.0.1"
    dashboard_port: Optional[int] = None
    expose_dashboard: bool = False
    quiet: bool = False
    runtime_env: Optional[dict] = None
    """Ray's runtime_env for every worker (a study's code, `py_modules`); None: nothing added."""


def detect_local_gpus() -> int:
    """NVIDIA GPUs visible on this machine (NVML, else torch), 0 when none."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no driver / no NVML library: ask torch instead
        pass
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def keep_ray_on_loopback() -> None:
    """Make a local Ray bind and advertise 127.0.0.1 only (call before Ray starts).

    Ray reads RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER when it is imported; workers inherit the variable.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    if "ray" in sys.modules:  # imported earlier in this process: update the constant it read
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False


@dataclass
class RayInfo:
    """What the driver learnt when Ray started: GPUs and where the dashboard is."""

    gpus: float
    dashboard_url: Optional[str]
    token_file: Optional[Path]
    start_s: float = math.nan


def validate_dashboard(spec: RayOptions) -> None:
    if spec.dashboard and spec.dashboard_host not in LOOPBACK and not spec.expose_dashboard:
        raise ClusterError(
            f"--dashboard-host {spec.dashboard_host} would let anyone who can reach this machine run "
            f"code on it through the Ray dashboard; add --expose-dashboard to confirm, or keep 127.0.0.1"
        )


def init_ray(spec: RayOptions) -> RayInfo:
    """Start (or join) Ray. Reuses an already-initialised Ray.

    Ray reads its network and auth settings from the environment when it is imported, so they
    are set here, before the first `import ray`.
    """
    if (gpus := existing_cluster_gpus()) is not None:
        return RayInfo(gpus, None, None)
    token_note = ""
    if spec.address is None and spec.dashboard_host in LOOPBACK:
        keep_ray_on_loopback()  # single machine: nothing to expose
    elif spec.address is not None:
        check_reachable(spec.address)
        if spec.address.split(":")[0] in LOOPBACK:
            keep_ray_on_loopback()  # else Ray rewrites a loopback address to the machine's network address
        token_note = prepare_cluster_auth()
    import ray

    if spec.address is None:
        gpus = spec.gpus if spec.gpus is not None else detect_local_gpus()
        ctx = ray.init(
            address="local",
            num_gpus=int(math.ceil(gpus)),
            include_dashboard=spec.dashboard,
            dashboard_host=spec.dashboard_host,
            dashboard_port=spec.dashboard_port,
            log_to_driver=not spec.quiet,
            configure_logging=True,
            logging_level="WARNING",
            runtime_env=spec.runtime_env,
        )
    else:
        try:
            ctx = ray.init(
                address=spec.address,
                log_to_driver=not spec.quiet,
                logging_level="WARNING",
                runtime_env=spec.runtime_env,
            )
        except (ConnectionError, RuntimeError, ValueError) as e:
            hint = f"; {token_note}" if token_note else ""
            raise ClusterError(
                f"cannot join the Ray cluster at --address {spec.address}: "
                f"{type(e).__name__}: {str(e).splitlines()[0]}{hint}"
            ) from None
    url = getattr(ctx, "dashboard_url", None) or None
    token = auth_token_path() if os.environ.get("RAY_AUTH_MODE") != "disabled" and auth_token_path().is_file() else None
    return RayInfo(float(ray.cluster_resources().get("GPU", 0)), f"http://{url}" if url else None, token)


def dashboard_lines(info: RayInfo) -> list[str]:
    """How to reach the dashboard: its URL and how to authenticate."""
    if not info.dashboard_url:
        return []
    lines = [f"Ray dashboard: {info.dashboard_url}"]
    if info.token_file:
        lines.append(
            f"  token auth: the token is in {info.token_file}; log in with it in the browser, or send "
            f"'Authorization: Bearer <token>' (curl -H \"Authorization: Bearer $(cat {info.token_file})\" "
            f"{info.dashboard_url}/api/version)"
        )
    return lines


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast (Ray itself retries for minutes) when nothing listens at a host:port address."""
    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "auto", ray:// client addresses: left to Ray
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as e:
        raise ClusterError(
            f"--address {address}: nothing answers there ({e.strerror or e}); start the head with "
            f"`ray start --head --port {port}` or check the address"
        ) from None


def auth_token_path() -> Path:
    """Where Ray keeps the cluster token (RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)."""
    return Path(os.environ.get("RAY_AUTH_TOKEN_PATH", "~/.ray/auth_token")).expanduser()


def prepare_cluster_auth() -> str:
    """Before joining an existing cluster: switch the client to token auth when a token is at hand.

    Returns "" when a token was found (or auth is explicitly disabled), else a note saying what is
    missing, for the error message if joining fails.
    """
    if os.environ.get("RAY_AUTH_MODE") == "disabled":
        return ""
    if os.environ.get("RAY_AUTH_TOKEN") or auth_token_path().is_file():
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        return ""
    return (
        f"if the cluster uses token auth, put its token in {auth_token_path()} or RAY_AUTH_TOKEN "
        f"(it is ~/.ray/auth_token on the head node)"
    )


def ray_running() -> bool:
    return "ray" in sys.modules and sys.modules["ray"].is_initialized()


def existing_cluster_gpus() -> Optional[float]:
    return float(sys.modules["ray"].cluster_resources().get("GPU", 0)) if ray_running() else None


def start_ray(spec: RayOptions, say: Callable[[str], None]) -> RayInfo:
    """`init_ray`, timed, then say where the dashboard is."""
    t0 = time.perf_counter()
    info = init_ray(spec)
    info.start_s = time.perf_counter() - t0
    for line in dashboard_lines(info):
        say(line)
    return info
