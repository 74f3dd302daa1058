"""Connect to Ray: start a local cluster bound to loopback, or join the one the user names.

`ray job submit -- python -m ledex_rl.train` runs the driver on a cluster node where RAY_ADDRESS is
set; then `ray.address` stays empty and `ray.init()` joins that cluster.
"""

from __future__ import annotations

import logging
import os

from ledex_rl import console
from ledex_rl.config import RayConfig
from ledex_rl.errors import UserError

log = logging.getLogger(__name__)
stage_log = logging.getLogger(console.STAGE_LOG)  # shown on the console


class ClusterUnavailable(UserError, RuntimeError):
    """The configured Ray cluster cannot be reached; the message says how to fix it."""


def connect(cfg: RayConfig, quiet: bool | None = None):
    """`quiet`: do not stream the actors' logs to this terminal (the logs stay in Ray's log folder, the
    dashboard, and run_dir/logs/ray when `ledex_rl.console` set up the run). By default: quiet unless
    the run was started with -v (`console.actor_logs_live`)."""
    import ray

    if ray.is_initialized():
        return ray
    quiet = not console.actor_logs_live() if quiet is None else quiet
    # A local ray.init() writes ~/.ray/auth_token, after which every `ray start` turns token auth on
    # and `ray job submit` gets HTTP 401: be explicit instead (clusters set RAY_AUTH_MODE=token).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    address = cfg.address or os.environ.get("RAY_ADDRESS", "")
    try:
        if address:
            ray.init(address=address, namespace=cfg.namespace, log_to_driver=not quiet)
        else:
            ray.init(
                num_cpus=cfg.num_cpus or None,
                namespace=cfg.namespace,
                dashboard_host=cfg.dashboard_host,
                include_dashboard=not quiet,
                log_to_driver=not quiet,
            )
    except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        if address:
            raise ClusterUnavailable(
                f"cannot reach the Ray cluster at '{address}' ({reason}); start one with `ray start --head` "
                f"or leave ray.address empty to start a local cluster"
            ) from None
        raise ClusterUnavailable(f"cannot start a local Ray cluster ({reason})") from None
    # On the console: a job submitted to a cluster should say which one it joined.
    stage_log.info("ray: %s", "joined " + address if address else "started a local cluster")
    log.info("ray resources: %s", ray.cluster_resources())
    console.link_ray_logs()
    return ray
