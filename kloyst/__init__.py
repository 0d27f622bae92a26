"""Kloyst: a multi-tenant WhatsApp Business backend.

``main`` is the PasteDeploy app factory (``[app:main] use = egg:kloyst``). It builds the
plugin manager from the installed ``kloyst.plugins`` entry points, resolves settings (ini,
environment, required secrets), wires the core and every plugin's routes, tasks and
handlers, and returns the WSGI application. Nothing is registered at import time.
"""

from __future__ import annotations

import os
from pathlib import Path
from collections.abc import Iterable

from kloyst.version import __version__

__all__ = ["__version__", "main", "make_configurator"]

# Settings holding file-system paths, resolved against the ini file's directory when relative.
_PATH_SETTINGS = ("kloyst.queue.sqlite_path", "kloyst.mail.file_dir", "kloyst.log.dir")


def make_configurator(global_config: dict | None, settings: dict, *,
                      extra_plugins: Iterable[tuple[str, object]] = (), environ=None):
    """Build and return the fully wired ``Configurator`` (tests and the CLI use this directly)."""
    # Imported here, not at the top: this package's __init__ runs before every ``import kloyst.<anything>``,
    # and ``kloyst.version`` (read by plugins at start-up) must stay cheap to import.
    from pyramid.config import Configurator

    from kloyst import config as kconfig, logs
    from kloyst.plugins import build_plugin_manager

    pm = build_plugin_manager(extra_plugins)
    table = kconfig.CORE_SETTINGS + tuple(setting for _, setting in pm.collect("kloyst_settings"))
    resolved = kconfig.resolve(settings, table, kconfig.environment() if environ is None else environ)
    here = Path((global_config or {}).get("here") or os.getcwd())
    for key in _PATH_SETTINGS:
        if resolved.get(key) and not os.path.isabs(resolved[key]):
            resolved[key] = str(here / resolved[key])
    resolved["kloyst.here"] = str(here)
    logs.configure(resolved, service=resolved["kloyst.service_type"])

    config = Configurator(settings=resolved)
    config.registry["kloyst.plugin_manager"] = pm
    config.include(_services)
    config.include("kloyst.metrics")  # served on its own listener (kloyst.metrics.port), never by this app
    config.include("kloyst.crypto")
    config.include("kloyst.db")
    config.include("kloyst.http")
    config.include("kloyst.auth")
    config.include("kloyst.plugins")
    config.include("kloyst.outbox")
    config.include("kloyst.queue")
    config.include("kloyst.webhooks")  # public, outside the API prefix: /webhook/whatsapp
    with config.route_prefix_context(resolved["kloyst.api.prefix"]):
        config.include("kloyst.auth.views")
        config.include("kloyst.accounts")
        config.include("kloyst.plugins.views")
        config.include("kloyst.outbox.views")
        config.include("kloyst.http.openapi")  # /v1/openapi.json and /v1/docs
    config.commit()
    from kloyst.plugins.routing import include_plugin_routes

    include_plugin_routes(config)
    return config


def _services(config) -> None:
    """Process-wide services on the registry: Redis (optional), the rate limiter, the mailer, outbox handlers."""
    import redis  # imported here, as in make_configurator: this __init__ must stay cheap to import

    from kloyst import mail
    from kloyst.auth.tokens import AccessTokenCodec
    from kloyst.config import ConfigurationError
    from kloyst.meta import MetaClient
    from kloyst.ratelimit import make_rate_limiter

    settings = config.get_settings()
    url = settings["kloyst.redis.url"]
    client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5) if url else None
    config.registry["kloyst.redis"] = client
    config.registry["kloyst.rate_limiter"] = make_rate_limiter(client)
    config.registry["kloyst.mailer"] = mail.make_mailer(settings)
    config.registry["kloyst.access_tokens"] = AccessTokenCodec.from_settings(settings)
    # One pooled Graph client per process; every call passes the vendor's own token.
    config.registry["kloyst.meta"] = MetaClient.from_settings(settings)
    handlers: dict = {}
    owners: dict = {}
    for plugin, (topic, handler) in config.registry["kloyst.plugin_manager"].collect("kloyst_outbox_handlers"):
        if topic in handlers:
            raise ConfigurationError(f"outbox topic {topic!r} is handled by both {owners[topic]!r} and {plugin!r}")
        handlers[topic], owners[topic] = handler, plugin
    config.registry["kloyst.outbox_handlers"] = handlers
    # A topic's handler runs only for vendors that have its plugin on (see kloyst.outbox.delivery).
    config.registry["kloyst.outbox_handler_owners"] = owners


def main(global_config, **settings):
    """PasteDeploy entry point: the WSGI application for the ini file's ``[app:main]``."""
    return make_configurator(global_config, settings).make_wsgi_app()
