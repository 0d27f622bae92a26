"""Settings: one table of every core setting, its environment variable and its default.

Why a table: an operator reads one place to learn what Kloyst can be told, the README's
settings section is generated from the same facts, and start-up can say exactly which
secret is missing instead of failing later with a ``KeyError`` deep in a request.

The rules, applied in this order for every setting below:

1. the ini file's value (``kloyst.database.url = ...``);
2. overridden by its environment variable when that is set (``DATABASE_URL``);
3. a value written ``${NAME}`` in the ini must come from the environment variable ``NAME``:
   if it is not set, start-up stops with a message naming both the setting and the variable.
   ``staging.ini`` writes every secret this way, so no secret lives in a committed file.

Plugins add their own settings through the ``kloyst_settings`` hook with the same
:class:`Setting` shape; their keys are ``<plugin>.<key>``.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable, Mapping

ENV_REFERENCE = re.compile(r"^\$\{([A-Z][A-Z0-9_]*)\}$")

# The service modes (see kloyst.runner); here so that a wrong SERVICE_TYPE stops start-up with the other
# setting problems, before anything is built.
SERVICE_TYPES = ("API_GATEWAY", "WEBHOOK", "WORKER", "OUTBOX", "ALL")


class ConfigurationError(Exception):
    """Raised at start-up when a setting is missing or malformed; the message says how to fix it."""


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"{value!r} is not a boolean (use true or false)")


def as_list(value: Any) -> list[str]:
    if isinstance(value, (list, tuple)):
        return [str(v).strip() for v in value if str(v).strip()]
    return [part.strip() for part in re.split(r"[,\s]+", str(value or "")) if part.strip()]


_ORIGIN = re.compile(r"^https?://[^/\s*]+$")


def as_origins(value: Any) -> list[str]:
    """CORS origins as browsers send them (``scheme://host[:port]``); a wildcard is refused, never implied."""
    origins = []
    for origin in as_list(value):
        origin = origin.rstrip("/")
        if not _ORIGIN.match(origin):
            raise ValueError(f"{origin!r} is not an origin: write scheme://host[:port], one per allowed site "
                             "(no wildcard, no path)")
        origins.append(origin.lower())
    return origins


_BASE_URL = re.compile(r"^https?://[^/\s?#]+(/[^\s?#]*)?$")


def as_base_url(value: Any) -> str:
    """An http(s) URL that paths are appended to (no query, no fragment), without its trailing slash; or empty."""
    text = str(value or "").strip()
    if text and not _BASE_URL.match(text):
        raise ValueError(f"{text!r} is not a base URL: write https://host[:port][/path], without ? or #")
    return text.rstrip("/")


def as_service_type(value: Any) -> str:
    text = str(value or "").strip().upper()
    if text not in SERVICE_TYPES:
        raise ValueError(f"{text or '(empty)'!r} is not a service type; use one of: {', '.join(SERVICE_TYPES)}")
    return text


_BASE64URL = re.compile(r"^[A-Za-z0-9_+/-]+={0,2}$")


def _decode_key(kid: str, encoded: str) -> bytes:
    # Strict: b64decode without validate silently drops stray characters, which would turn a
    # mangled key into a short (or empty) one and a confusing "too short" message.
    if not _BASE64URL.match(encoded):
        raise ValueError(f"key {kid!r} is not valid base64 (use the URL-safe alphabet A-Z a-z 0-9 - _)")
    standard = encoded.rstrip("=").replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(standard + "=" * (-len(standard) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"key {kid!r} is not valid base64 (wrong length)") from exc


def as_keyring(value: Any, *, exact_bytes: int | None = None) -> dict[str, bytes]:
    """Parse ``kid1:base64key,kid2:base64key`` into ``{kid: key}``; each key must be 32 bytes or more.

    The first entry is the active one (used to sign or encrypt); the others only verify or
    decrypt, which is how keys rotate without invalidating what was made with the old key
    (``kloyst keys rotate`` then moves the data keyring's ciphertexts to the new key).
    Messages name the key id and the entry's position, never any part of a key.
    """
    if isinstance(value, dict):
        return value
    ring: dict[str, bytes] = {}
    for position, entry in enumerate(as_list(value), start=1):
        kid, sep, encoded = entry.partition(":")
        if not sep or not kid or not encoded:
            raise ValueError(f"key entry #{position} must look like kid:base64key")
        key = _decode_key(kid, encoded)
        if exact_bytes is not None and len(key) != exact_bytes:
            raise ValueError(f"key {kid!r} has {len(key)} bytes; exactly {exact_bytes} are required")
        if len(key) < 32:
            raise ValueError(f"key {kid!r} has {len(key)} bytes; at least 32 are required")
        if kid in ring:
            raise ValueError(f"key id {kid!r} appears twice")
        ring[kid] = key
    if not ring:
        raise ValueError("at least one key is required")
    return ring


def as_aes256_keyring(value: Any) -> dict[str, bytes]:
    """A keyring of AES-256 keys: each exactly 32 bytes (AES-GCM refuses any other size at first use)."""
    return as_keyring(value, exact_bytes=32)


@dataclass(frozen=True)
class Rate:
    """``count`` per ``seconds``: a token bucket of ``count`` tokens refilled at that pace (kloyst.ratelimit.*)."""

    count: int
    seconds: int

    def __str__(self) -> str:
        return f"{self.count}/{self.seconds}"


def as_rate(value: Any) -> Rate:
    """``count/seconds`` (``300/60``), both whole numbers of at least 1."""
    if isinstance(value, Rate):
        return value
    count, sep, seconds = str(value).strip().partition("/")
    if not sep or not count.strip().isdigit() or not seconds.strip().isdigit():
        raise ValueError(f"{value!r} is not a rate: write count/seconds, e.g. 300/60")
    rate = Rate(int(count), int(seconds))
    if rate.count < 1 or rate.seconds < 1:
        raise ValueError(f"{value!r}: the count and the seconds must both be at least 1")
    return rate


@dataclass(frozen=True)
class Setting:
    """One setting: its ini key, the environment variable that overrides it, a default and a parser.

    ``required`` settings without a default stop start-up when absent.
    ``secret`` settings are never printed (``kloyst plugins`` and logs show them as ``***``).
    """

    key: str
    env: str
    default: Any = None
    parse: Callable[[Any], Any] = str
    required: bool = False
    secret: bool = False
    help: str = ""


CORE_SETTINGS: tuple[Setting, ...] = (
    Setting("kloyst.service_type", "SERVICE_TYPE", "ALL", as_service_type,
            help="Which service `kloyst run` runs: API_GATEWAY, WEBHOOK, WORKER, OUTBOX or ALL (other commands run "
                 "no service and ignore it)."),
    Setting("kloyst.http.host", "HOST", "127.0.0.1", help="Address the HTTP server binds."),
    Setting("kloyst.http.port", "PORT", 6543, int, help="Port of the REST API."),
    Setting("kloyst.http.webhook_port", "WEBHOOK_PORT", 6544, int,
            help="Port of the webhook receiver in WEBHOOK mode."),
    Setting("kloyst.http.trusted_proxy", "TRUSTED_PROXY", "",
            help="Address of the reverse proxy whose X-Forwarded-For/-Proto/-Host/-Port waitress believes "
            "(* for any peer, only when nothing but the proxy can reach the port); empty trusts none."),
    Setting("kloyst.http.threads", "HTTP_THREADS", 8, int, help="Request threads of each HTTP server."),
    Setting("kloyst.http.webhook_threads", "WEBHOOK_HTTP_THREADS", 16, int,
            help="Request threads of the WEBHOOK mode's server: each waits for the commit that stores its "
                 "delivery, and the more wait together, the more share one commit."),
    Setting("kloyst.http.reuse_port", "REUSE_PORT", False, as_bool,
            help="Bind with SO_REUSEPORT so several processes of one mode share its port (the kernel balances)."),
    Setting("kloyst.http.max_body_bytes", "MAX_BODY_BYTES", 1_048_576, int,
            help="Largest request body accepted by ordinary JSON routes (uploads have their own limit)."),
    Setting("kloyst.http.public_url", "PUBLIC_URL", "",
            help="Base URL users reach Kloyst at; used in links inside emails. Empty: http://HOST:PORT."),
    Setting("kloyst.metrics.port", "METRICS_PORT", 0, int,
            help="Port of the metrics listener (GET /metrics for Prometheus, GET /healthz for this process's "
            "loops), in every mode; 0 (the default) opens none. Never publish it beyond the internal network."),
    Setting("kloyst.metrics.host", "METRICS_HOST", "127.0.0.1",
            help="Address the metrics listener binds (0.0.0.0 inside a compose network)."),
    Setting("kloyst.api.prefix", "API_PREFIX", "/v1", help="Prefix of every REST route."),
    Setting("kloyst.cors.allowed_origins", "CORS_ALLOWED_ORIGINS", "", as_origins,
            help="Comma-separated origins allowed by CORS; any other origin gets no CORS headers."),
    Setting("kloyst.database.url", "DATABASE_URL", required=True, secret=True,
            help="SQLAlchemy URL: sqlite:///… for the embedded default, postgresql://… (psycopg2) otherwise."),
    Setting("kloyst.database.echo", "DATABASE_ECHO", False, as_bool),
    Setting("kloyst.redis.url", "REDIS_URL", "", secret=True,
            help="Redis URL; empty means in-process throttling and rate limits (embedded default)."),
    Setting("kloyst.queue.backend", "QUEUE_BACKEND", "sqlite", str.lower,
            help="huey storage: sqlite (embedded default), redis, or memory (tests)."),
    Setting("kloyst.queue.name", "QUEUE_NAME", "kloyst"),
    Setting("kloyst.queue.sqlite_path", "QUEUE_SQLITE_PATH", "var/queue.sqlite"),
    Setting("kloyst.queue.immediate", "QUEUE_IMMEDIATE", False, as_bool,
            help="Run tasks synchronously when enqueued (tests only)."),
    Setting("kloyst.queue.workers", "QUEUE_WORKERS", 4, int, help="Worker threads of the huey consumer."),
    Setting("kloyst.jwt.signing_keys", "JWT_SIGNING_KEYS", required=True, parse=as_keyring, secret=True,
            help="HS256 keys as kid:base64key, comma-separated; the first signs, all verify."),
    Setting("kloyst.jwt.issuer", "JWT_ISSUER", "kloyst"),
    Setting("kloyst.jwt.audience", "JWT_AUDIENCE", "kloyst-api"),
    Setting("kloyst.jwt.access_ttl_seconds", "JWT_ACCESS_TTL_SECONDS", 600, int),
    Setting("kloyst.jwt.refresh_ttl_seconds", "JWT_REFRESH_TTL_SECONDS", 30 * 24 * 3600, int),
    Setting("kloyst.jwt.leeway_seconds", "JWT_LEEWAY_SECONDS", 30, int),
    Setting("kloyst.crypto.data_keys", "DATA_ENCRYPTION_KEYS", required=True, parse=as_aes256_keyring,
            secret=True, help="AES-256-GCM keys (32 bytes each) for contact fields as kid:base64key; the first "
            "encrypts, all decrypt."),
    Setting("kloyst.crypto.hash_key", "DATA_HASH_KEY", required=True, secret=True,
            help="HMAC key for mobile_hash (dedupe without plaintext numbers)."),
    Setting("kloyst.meta.app_secret", "META_APP_SECRET", required=True, secret=True,
            help="Meta app secret; verifies X-Hub-Signature-256 on webhooks."),
    Setting("kloyst.meta.verify_token", "META_VERIFY_TOKEN", required=True, secret=True,
            help="Token Meta echoes in the webhook verification handshake."),
    Setting("kloyst.meta.graph_url", "META_GRAPH_URL", "https://graph.facebook.com"),
    Setting("kloyst.meta.graph_version", "META_GRAPH_VERSION", "v23.0"),
    Setting("kloyst.meta.embedded_sandbox", "META_EMBEDDED_SANDBOX", False, as_bool,
            help="Serve the Meta sandbox at kloyst.meta.graph_url from `kloyst run` in ALL mode (development)."),
    Setting("kloyst.meta.timeout_seconds", "META_TIMEOUT_SECONDS", 10.0, float,
            help="Connect and read timeout of each Graph API call; a slower answer is a transient network error."),
    Setting("kloyst.meta.max_connections", "META_MAX_CONNECTIONS", 128, int,
            help="Keep-alive connections the Meta client pools; size it to rate × latency (1,000/s × 0.1 s ≈ 100)."),
    Setting("kloyst.mail.backend", "MAIL_BACKEND", "file", str.lower,
            help="file (writes .eml files under kloyst.mail.file_dir) or smtp."),
    Setting("kloyst.mail.file_dir", "MAIL_FILE_DIR", "var/mail"),
    Setting("kloyst.mail.smtp_url", "SMTP_URL", "", secret=True,
            help="smtp://user:password@host:587 (STARTTLS) or smtps://…:465; required when the backend is smtp."),
    Setting("kloyst.mail.sender", "MAIL_SENDER", "Kloyst <no-reply@kloyst.local>"),
    Setting("kloyst.mail.portal_url", "PORTAL_URL", "", as_base_url,
            help="Base URL of the vendor portal whose /verify-email and /reset-password pages mailed links open; "
                 "empty: Kloyst's own pages at kloyst.http.public_url."),
    Setting("kloyst.log.dir", "LOG_DIR", "var/log"),
    Setting("kloyst.log.level", "LOG_LEVEL", "INFO", str.upper),
    Setting("kloyst.log.network_level", "LOG_NETWORK_LEVEL", "INFO", str.upper),
    Setting("kloyst.log.retention_days", "LOG_RETENTION_DAYS", 14, int),
    Setting("kloyst.log.console", "LOG_CONSOLE", True, as_bool),
    Setting("kloyst.ratelimit.per_user", "RATELIMIT_PER_USER", "300/60", as_rate,
            help="API requests each signed-in user may make, as count/seconds: a burst of count, refilled at "
                 "count per seconds; expensive routes cost more than 1 (their rate_cost)."),
    Setting("kloyst.ratelimit.per_vendor", "RATELIMIT_PER_VENDOR", "600/60", as_rate,
            help="API requests all the users of one vendor may make together, as count/seconds."),
    Setting("kloyst.ratelimit.per_ip", "RATELIMIT_PER_IP", "120/60", as_rate,
            help="API requests without a valid access token allowed per client IP, as count/seconds."),
    Setting("kloyst.throttle.login_per_ip", "THROTTLE_LOGIN_PER_IP", "20/60",
            help="Login/signup/password attempts allowed per client IP, as count/seconds."),
    Setting("kloyst.throttle.login_per_account", "THROTTLE_LOGIN_PER_ACCOUNT", "5/300",
            help="Sign-in attempts allowed at one account from one client address, and sign-up/password "
                 "requests per account, as count/seconds."),
    Setting("kloyst.throttle.login_account_ceiling", "THROTTLE_LOGIN_ACCOUNT_CEILING", "50/60",
            help="Sign-in attempts allowed at one account from every address together, as count/seconds: "
                 "its window is the longest a distributed attack can hold the owner back."),
)


def resolve(settings: Mapping[str, Any], table: tuple[Setting, ...], environ: Mapping[str, str],
            source: str = "the ini file") -> dict[str, Any]:
    """Return ``settings`` with every setting in ``table`` resolved, parsed and validated.

    Collects every problem before raising, so an operator fixes a deployment in one go.
    """
    resolved = dict(settings)
    problems: list[str] = []
    for setting in table:
        raw = settings.get(setting.key)
        if setting.env in environ:
            raw = environ[setting.env]
        elif isinstance(raw, str) and (match := ENV_REFERENCE.match(raw.strip())):
            name = match.group(1)
            if name not in environ:
                problems.append(f"{setting.key} must come from the environment variable {name}, which is not set")
                continue
            raw = environ[name]
        if raw is None or (isinstance(raw, str) and raw.strip() == "" and setting.required):
            if setting.required and setting.default is None:
                problems.append(f"{setting.key} is required: set it in {source} or in the environment variable "
                                f"{setting.env}")
                continue
            raw = setting.default
        try:
            resolved[setting.key] = setting.parse(raw) if raw is not None else None
        except (TypeError, ValueError) as exc:
            problems.append(f"{setting.key} (environment variable {setting.env}) is invalid: {exc}")
    if problems:
        raise ConfigurationError("Kloyst cannot start:\n  - " + "\n  - ".join(problems))
    _derive_public_url(resolved)
    return resolved


def _derive_public_url(resolved: dict[str, Any]) -> None:
    """An empty public URL follows the address the API listens on, so ``PORT=8000`` also moves mail links."""
    if resolved.get("kloyst.http.public_url") != "" or "kloyst.http.port" not in resolved:
        return
    host = resolved.get("kloyst.http.host") or "127.0.0.1"
    if host in ("0.0.0.0", "::"):  # listening everywhere says nothing about the name users reach
        host = "127.0.0.1"
    resolved["kloyst.http.public_url"] = f"http://{host}:{resolved['kloyst.http.port']}"


def parse_rate(text: str) -> tuple[int, int]:
    """Parse ``count/seconds`` (``"5/300"``) into a tuple; used by throttle settings."""
    count, sep, seconds = str(text).partition("/")
    if not sep:
        raise ConfigurationError(f"rate {text!r} must look like count/seconds, e.g. 5/300")
    return int(count), int(seconds)


def environment() -> Mapping[str, str]:
    """The process environment; a function so tests can see the seam."""
    return os.environ
