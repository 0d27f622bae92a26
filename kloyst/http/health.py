"""Liveness and readiness for load balancers and compose health checks (public, outside the API prefix).

``/healthz`` answers 200 while the process can serve at all; it touches nothing else, so a
database outage never makes an orchestrator restart healthy processes. ``/readyz`` checks
the database and Redis and answers 503, in the usual error envelope naming each failed
dependency, when one is down. It never raises: a probe that crashes is a failed check.
The client sees only the kind of failure; the full error goes to the app log.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field
from pyramid.security import NO_PERMISSION_REQUIRED
from sqlalchemy import text

from kloyst.http.errors import error_body
from kloyst.http.validation import Answer

log = logging.getLogger(__name__)

OK = "ok"
NOT_CONFIGURED = "not configured (in-process)"


class Health(Answer):
    status: Literal["ok"]


class Readiness(Answer):
    status: Literal["ready"]
    checks: dict[str, str] = Field(description="Each dependency: `ok`, or `not configured (in-process)`.")


def healthz(request):
    return {"status": "ok"}


def _probe(name: str, probe) -> str:
    try:
        probe()
    except Exception as exc:  # readiness reports failures, it does not crash
        log.warning("readiness check %s failed: %s: %s", name, type(exc).__name__, exc, extra={"check": name})
        return f"unavailable ({type(exc).__name__})"
    return OK


def _ping_database(registry) -> None:
    with registry["kloyst.engine"].connect() as connection:
        connection.execute(text("SELECT 1"))


def readyz(request):
    registry = request.registry
    checks = {"database": _probe("database", lambda: _ping_database(registry))}
    redis_client = registry.get("kloyst.redis")
    checks["redis"] = _probe("redis", redis_client.ping) if redis_client is not None else NOT_CONFIGURED
    failed = {name: state for name, state in checks.items() if state not in (OK, NOT_CONFIGURED)}
    if not failed:
        return {"status": "ready", "checks": checks}
    request.response.status_int = 503
    summary = ", ".join(f"{name} is {state}" for name, state in failed.items())
    return error_body("not_ready", f"not ready: {summary}", {"checks": checks})


def includeme(config) -> None:
    config.add_route("ops.healthz", "/healthz")
    config.add_route("ops.readyz", "/readyz")
    # Load balancers and orchestrators poll these from a few addresses: never rate limited.
    config.add_view(healthz, route_name="ops.healthz", request_method="GET", renderer="json",
                    permission=NO_PERMISSION_REQUIRED, response_schema=Health, rate_cost=0)
    config.add_view(readyz, route_name="ops.readyz", request_method="GET", renderer="json",
                    permission=NO_PERMISSION_REQUIRED, response_schema=Readiness, rate_cost=0)
