#!/usr/bin/env python3
"""Docker's health check for a Kloyst container: exit 0 when its mode is up, 1 when it is not.

Why a script rather than ``curl`` in the Dockerfile: the slim image has no curl, and which URL
proves a container healthy depends on its mode and its settings:

* API_GATEWAY (and ALL) must answer ``GET /healthz`` on the API port, WEBHOOK on the webhook
  port: that is the port nginx sends traffic to.
* With ``METRICS_PORT`` set, every mode must also answer ``GET /healthz`` on the metrics
  listener, which says 200 only while *all* of the process's loops are alive (HTTP server, huey
  consumer, outbox relay, webhook drainer, sender). WORKER and OUTBOX serve nothing else, so
  for them ``METRICS_PORT`` is required: without it nothing can tell a stuck worker from a busy one.

The ports and hosts are resolved the way ``kloyst run`` resolves them (the ini file's
``[app:main]``, overridden by the environment, through :func:`kloyst.config.resolve`), so the
check follows ``PORT``, ``WEBHOOK_PORT`` and ``METRICS_PORT`` wherever they are set. A server
bound to every address (0.0.0.0) is asked on loopback. The one line printed is what
``docker inspect`` shows for the last probe.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path

DEFAULT_INI = "/app/staging.ini"
TIMEOUT_SECONDS = 2.0  # per request; Docker's own timeout (5 s) covers the interpreter's start as well
KEYS = ("kloyst.service_type", "kloyst.http.host", "kloyst.http.port", "kloyst.http.webhook_port",
        "kloyst.metrics.host", "kloyst.metrics.port")


class Unhealthy(Exception):
    """The container is not healthy; the message says which check failed and why."""


def load_settings(ini: str, environ: Mapping[str, str]) -> dict:
    """The mode, hosts and ports of the ini file ``ini`` with the environment's overrides applied."""
    import plaster

    from kloyst.config import CORE_SETTINGS, ConfigurationError, resolve

    path = Path(ini)
    if not path.is_file():
        raise Unhealthy(f"ini file {ini} not found (set KLOYST_INI)")
    raw = plaster.get_loader(str(path.resolve()), protocols=["wsgi"]).get_settings("app:main")
    table = tuple(setting for setting in CORE_SETTINGS if setting.key in KEYS)
    unknown = set(KEYS) - {setting.key for setting in table}
    if unknown:
        raise Unhealthy(f"this Kloyst has no setting {', '.join(sorted(unknown))}")
    try:
        return resolve({key: raw[key] for key in KEYS if key in raw}, table, environ)
    except ConfigurationError as exc:
        raise Unhealthy(" ".join(str(exc).split())) from None


def _url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/healthz"


def health_urls(settings: Mapping) -> list[str]:
    """The ``/healthz`` URLs that must all answer 200 for this container's mode."""
    mode = settings["kloyst.service_type"]
    urls = []
    if mode in ("API_GATEWAY", "ALL"):
        urls.append(_url(settings["kloyst.http.host"], settings["kloyst.http.port"]))
    elif mode == "WEBHOOK":
        urls.append(_url(settings["kloyst.http.host"], settings["kloyst.http.webhook_port"]))
    if settings["kloyst.metrics.port"]:
        urls.append(_url(settings["kloyst.metrics.host"], settings["kloyst.metrics.port"]))
    elif not urls:
        raise Unhealthy(f"{mode} serves no HTTP of its own: set METRICS_PORT so its health can be checked")
    return urls


def probe(url: str) -> str:
    """GET ``url``; return a short note when it answers 200, raise :class:`Unhealthy` otherwise."""
    # No proxies: an HTTP_PROXY in the container's environment must not carry a loopback probe away.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=TIMEOUT_SECONDS) as response:
            response.read()
            return f"{url} 200"
    except urllib.error.HTTPError as exc:
        body = exc.read(300).decode("utf-8", "replace").strip()
        raise Unhealthy(f"{url} answered {exc.code}: {body}") from None
    except (OSError, ValueError) as exc:  # refused, timed out, reset
        raise Unhealthy(f"{url} did not answer: {exc}") from None


def main(environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    try:
        settings = load_settings(environ.get("KLOYST_INI", DEFAULT_INI), environ)
        notes = [probe(url) for url in health_urls(settings)]
    except Unhealthy as exc:
        print(f"unhealthy: {exc}", flush=True)
        return 1
    print(f"healthy ({settings['kloyst.service_type']}): {'; '.join(notes)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
