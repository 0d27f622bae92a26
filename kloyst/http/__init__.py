"""HTTP basics shared by every route: JSON in and out, one error shape, security headers, CORS, limits, health."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid

from pyramid.renderers import JSON


def request_path(request) -> str:
    """The request's path for messages and logs, even when its percent-encoding is not UTF-8.

    ``request.path`` raises ``UnicodeDecodeError`` on such paths (``/%ff``), and a 400 must
    not turn into a crash while being logged.
    """
    raw = request.environ.get("SCRIPT_NAME", "") + request.environ.get("PATH_INFO", "")
    return raw.encode("latin-1", "replace").decode("utf-8", "backslashreplace")


def _json_renderer() -> JSON:
    renderer = JSON()
    renderer.add_adapter(uuid.UUID, lambda obj, request: str(obj))
    renderer.add_adapter(dt.datetime, lambda obj, request: obj.isoformat())
    renderer.add_adapter(dt.date, lambda obj, request: obj.isoformat())
    renderer.add_adapter(decimal.Decimal, lambda obj, request: str(obj))
    renderer.add_adapter(enum.Enum, lambda obj, request: obj.value)
    return renderer


def includeme(config) -> None:
    config.add_renderer("json", _json_renderer())
    config.include(".errors")
    config.include(".tweens")
    config.include(".health")
    config.include(".validation")
    config.include(".quotas")
    config.include(".access_log")
