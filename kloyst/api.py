"""Kloyst's public API: every name a plugin may import from the core, and nothing else.

A plugin — ours in ``kloyst_plugins/`` or a third party's — imports the core only from here
(``from kloyst.api import hookimpl, PluginMeta, Setting, task, …``); ``tests/unit/test_layers.py``
fails when one reaches into any other core module, and when a name is used that ``__all__``
does not list. A plugin that needs something of another plugin imports that plugin's own
``api`` module, and only if its :class:`PluginMeta` ``requires`` it.

What is here is covered by the deprecation policy in ``CHANGELOG.md``: a name is deprecated
for one minor version, with a warning, before it goes. Everything else in ``kloyst`` may change
in any release. The types the core hooks take and return (:class:`MergeStrategy`,
:class:`PricingRule`, :class:`SettledMessage`…) are defined in :mod:`kloyst.plugins.contracts`
and listed here; the hooks themselves are documented in ``docs/plugin_hooks.md``.
"""

from kloyst import events, metrics
from kloyst.accounts.models import User, Vendor
from kloyst.auth.views import no_content
from kloyst.clamav import (
    as_scan_mode,
    Clamd,
    is_loopback,
    SCAN_OFF,
    SCAN_REQUIRED,
    ScannerUnavailable,
    unscanned_exposure,
    Verdict,
)
from kloyst.cli.bootstrap import load
from kloyst.config import as_bool, as_list, ConfigurationError, Setting
from kloyst.crypto import FieldCipher, MobileHasher
from kloyst.db import tenancy
from kloyst.batches import write_in_batches, write_until_done
from kloyst.db import Base, new_id, read_only_connection, session_scope, TenantScoped, Timestamped, utcnow
from kloyst.db.base import UTCDateTime
from kloyst.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    Gone,
    NotFound,
    PayloadTooLarge,
    PaymentRequired,
    Unprocessable,
    UnsupportedMediaType,
)
from kloyst.heartbeat import alive_since, Heartbeat, HeartbeatSettings, OWNER_ALIVE
from kloyst.http import openapi
from kloyst.http.idempotency import idempotency_key
from kloyst.http.multipart import display_name, read_form
from kloyst.http.pagination import Listing, MAX_CURSOR_LENGTH, MAX_LIMIT, Page, paginate
from kloyst.http.resources import load_platform_row
from kloyst.http.spreadsheet import csv_chunks, csv_safe
from kloyst.http.validation import (
    Amount,
    AmountIn,
    Answer,
    iso_timestamp,
    multi_line,
    MultilineText,
    parse,
    PlainText,
    Schema,
    SignedAmountIn,
    single_line,
    validation_details,
)
from kloyst.key_rotation import EncryptedFields
from kloyst.meta import ErrorKind, MetaClient, MetaError
from kloyst.meta.errors import classify
from kloyst.meta.payloads import message_payload, template_payload, text_payload
from kloyst.metrics.collectors import DatabaseCollector, seconds_since
from kloyst.metrics.definitions import META_STATUSES
from kloyst.money import format_micros, MAX_BALANCE_MICROS, MICROS, MoneyError, round_micros, to_micros
from kloyst.outbox import Outbox
from kloyst.outbox.delivery import backoff_seconds
from kloyst.outbox.models import OutboxEvent
from kloyst.periodic import Periodic
from kloyst.plugins import hookimpl, PluginMeta
from kloyst.plugins.contracts import (
    Charge,
    ContactFields,
    Line,
    MergeStrategy,
    PluginSettings,
    PricingRule,
    RuleContext,
    SettledMessage,
    SnapshotRef,
    union_labels,
)
from kloyst.plugins.enablement import enabled_plugins, TenantHooks
from kloyst.plugins.hookspecs import hookspec
from kloyst.plugins.models import VendorPlugin
from kloyst.queue import Reschedule, task, TaskContext
from kloyst.retention import ByGroupAndTime, BySequence, RetentionPolicy
from kloyst.webhooks import insert_skipping_conflicts, unprocessed_changes, WebhookChange

__all__ = [
    "alive_since",
    "Amount",
    "AmountIn",
    "Answer",
    "ApiError",
    "as_bool",
    "as_list",
    "as_scan_mode",
    "backoff_seconds",
    "BadRequest",
    "Base",
    "ByGroupAndTime",
    "BySequence",
    "Charge",
    "Clamd",
    "classify",
    "ConfigurationError",
    "Conflict",
    "ContactFields",
    "csv_chunks",
    "csv_safe",
    "DatabaseCollector",
    "display_name",
    "enabled_plugins",
    "EncryptedFields",
    "ErrorKind",
    "events",
    "FieldCipher",
    "Forbidden",
    "Gone",
    "format_micros",
    "Heartbeat",
    "HeartbeatSettings",
    "hookimpl",
    "hookspec",
    "idempotency_key",
    "insert_skipping_conflicts",
    "is_loopback",
    "iso_timestamp",
    "Line",
    "Listing",
    "load",
    "load_platform_row",
    "MAX_BALANCE_MICROS",
    "MAX_CURSOR_LENGTH",
    "MAX_LIMIT",
    "MergeStrategy",
    "message_payload",
    "META_STATUSES",
    "MetaClient",
    "MetaError",
    "metrics",
    "MICROS",
    "MobileHasher",
    "MoneyError",
    "multi_line",
    "MultilineText",
    "new_id",
    "no_content",
    "NotFound",
    "openapi",
    "Outbox",
    "OutboxEvent",
    "OWNER_ALIVE",
    "Page",
    "paginate",
    "Periodic",
    "parse",
    "PayloadTooLarge",
    "PaymentRequired",
    "PlainText",
    "read_form",
    "PluginMeta",
    "PluginSettings",
    "PricingRule",
    "read_only_connection",
    "Reschedule",
    "RetentionPolicy",
    "round_micros",
    "RuleContext",
    "SCAN_OFF",
    "SCAN_REQUIRED",
    "ScannerUnavailable",
    "Schema",
    "seconds_since",
    "session_scope",
    "Setting",
    "SettledMessage",
    "SignedAmountIn",
    "single_line",
    "SnapshotRef",
    "task",
    "TaskContext",
    "template_payload",
    "text_payload",
    "tenancy",
    "TenantHooks",
    "TenantScoped",
    "Timestamped",
    "to_micros",
    "Unprocessable",
    "unprocessed_changes",
    "unscanned_exposure",
    "union_labels",
    "UnsupportedMediaType",
    "User",
    "UTCDateTime",
    "utcnow",
    "write_in_batches",
    "write_until_done",
    "validation_details",
    "Vendor",
    "VendorPlugin",
    "Verdict",
    "WebhookChange",
]
