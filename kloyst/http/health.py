"""Liveness and readiness for load balancers and compose health checks (public, outside the API prefix)."""

from __future__ import annotations

from pyramid.security import NO_PERMISSION_REQUIRED
from sqlalchemy import text


def healthz(request):
    return {"status": "ok"}


def readyz(request):
    checks: dict[str, str] = {}
    try:
        with request.registry["kloyst.engine"].connect() as connection:
            connection.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:  # readiness reports, it does not crash
        checks["database"] = f"unavailable: {type(exc).__name__}"
    redis_client = request.registry.get("kloyst.redis")
    if redis_client is not None:
        try:
            redis_client.ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"unavailable: {type(exc).__name__}"
    else:
        checks["redis"] = "not configured (in-process)"
    ready = all(v == "ok" or v.startswith("not configured") for v in checks.values())
    if not ready:
        request.response.status_int = 503
    return {"status": "ready" if ready else "not ready", "checks": checks}


def includeme(config) -> None:
    config.add_route("ops.healthz", "/healthz")
    config.add_route("ops.readyz", "/readyz")
    config.add_view(healthz, route_name="ops.healthz", request_method="GET", renderer="json",
                    permission=NO_PERMISSION_REQUIRED)
    config.add_view(readyz, route_name="ops.readyz", request_method="GET", renderer="json",
                    permission=NO_PERMISSION_REQUIRED)
