"""Prometheus metrics: what the dashboards in monitoring/ read, served on a separate, internal port.

Why a separate listener (:mod:`.server`) rather than a route: ``/metrics`` must never be
reachable through nginx, and the WORKER and OUTBOX modes have no HTTP server of their own.
``kloyst.metrics.port`` (``METRICS_PORT``, 0 = off) opens it in every mode, with
``GET /metrics`` and ``GET /healthz`` (the liveness of this process's loops, for Docker).

Two kinds of metric:

* **Counted where it happens** (:mod:`.definitions`): request durations, webhook
  deliveries, message status transitions, imported rows, published outbox events. Each
  process counts its own; Prometheus sums the replicas. Anything written in a transaction
  is counted after it commits (:func:`after_commit`), so a rolled-back or retried batch is
  never counted twice.
* **Read at scrape time** (:mod:`.collectors` and each plugin's ``kloyst_metrics``
  collectors): outbox backlog, queue depth, dead letters, wallet holds. Shared state, so only
  the OUTBOX and ALL processes export it; each read is indexed, cached for a few seconds,
  bounded by a statement timeout, and a failing read is logged and exports nothing.

Code that counts takes the application's :class:`~.definitions.Metrics` with :func:`of`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from prometheus_client import disable_created_metrics

from kloyst.config import ConfigurationError
from kloyst.metrics import collectors
from kloyst.metrics.definitions import RECOVERY, SENDER, WEBHOOK, Metrics

__all__ = ["Metrics", "of", "after_commit", "SENDER", "WEBHOOK", "RECOVERY", "includeme"]

log = logging.getLogger(__name__)

# For registries built without this package included (a bare Configurator in a unit test): counts go
# nowhere rather than every caller checking for None.
_DETACHED = Metrics()


def of(registry) -> Metrics:
    """The application's metrics (a detached set nobody exports when metrics were not configured)."""
    return registry.get("kloyst.metrics") or _DETACHED


def after_commit(transaction_manager, count: Callable[[], None]) -> None:
    """Run ``count()`` once the current transaction of ``transaction_manager`` has committed (never on abort)."""

    def hook(committed: bool) -> None:
        if committed:
            count()

    transaction_manager.get().addAfterCommitHook(hook)


def includeme(config) -> None:
    """``registry["kloyst.metrics"]``: the core's metrics, the core's shared collectors, and every plugin's."""
    # A *_created series beside every counter doubles what each scrape carries for nothing the dashboards use.
    disable_created_metrics()
    registry = config.registry
    metrics = Metrics()
    metrics.add(collectors.BuildInfo(registry))
    for collector in collectors.core_collectors(registry):
        metrics.add_shared(collector)
    for plugin, collector in registry["kloyst.plugin_manager"].collect("kloyst_metrics", registry=registry):
        if not callable(getattr(collector, "collect", None)) or not callable(getattr(collector, "describe", None)):
            raise ConfigurationError(f"plugin {plugin!r} returned {collector!r} from kloyst_metrics: a collector "
                                     "needs collect() and describe() (see kloyst.metrics.collectors)")
        metrics.add_shared(collector)
    registry["kloyst.metrics"] = metrics
