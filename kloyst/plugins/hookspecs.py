"""Every hook a Kloyst plugin can implement.

Two kinds of hook, and the difference matters to plugin authors:

* **Configuration hooks** are called once, while the application (or worker, or CLI) is
  built, on *every installed* plugin: settings, routes, tasks, outbox handlers, migrations,
  CLI commands. What they register exists for all vendors; the gates (route predicate, task
  enablement check) decide per vendor at run time.
* **Tenant hooks** are called only on the plugins the current vendor has *enabled*
  (``pluggy``'s ``subset_hook_caller``): domain events. A plugin never sees another
  vendor's business unless that vendor turned it on.

Every hook name starts with ``kloyst_``. Collectors return a list and are not
``firstresult``; Kloyst flattens the lists. ``docs/plugin_hooks.md`` documents each hook
with its exact signature, and a test keeps the two in step.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("kloyst")


@hookspec
def kloyst_settings():
    """Declare the plugin's settings.

    Called: once per process, while the application is configured, on every installed plugin.
    Returns: a list of :class:`kloyst.config.Setting`; keys should read ``<plugin>.<key>``.
    Each is resolved like a core setting (ini value, environment override, ``${ENV}``
    references) and available as ``request.registry.settings[key]`` and ``ctx.settings[key]``.
    Not firstresult: every plugin's list is collected.
    """


@hookspec
def kloyst_routes(config):
    """Add the plugin's routes and views.

    Called: once per process, while the application is configured, on every installed
    plugin, each with its own configurator.
    Args:
        config: a :class:`kloyst.plugins.routing.PluginConfigurator`. ``config.add_route``
            on it prefixes the API prefix (``/v1``), requires the route name to start with
            ``<plugin>.``, and attaches the enablement predicate, so a vendor that has not
            enabled the plugin gets 404. Pass ``model=SomeTenantModel`` for routes whose
            ``{id}`` names a row: the row becomes ``request.context``, loaded through
            tenant scoping (another vendor's id is 404). Views default to the
            ``vendor.member`` permission. ``config.add_admin_route("admin.<plugin>.…", …)``
            adds a platform-admin route instead: no gate, every view ``platform.admin``.
    Returns: nothing.
    Not firstresult.
    """


@hookspec
def kloyst_tasks():
    """Declare the plugin's background tasks.

    Called: once per process, while the queue is built (API, worker and relay processes
    alike, so every process knows every task), on every installed plugin.
    Returns: a list of functions decorated with :func:`kloyst.queue.task`. Each runs in the
    worker as ``func(ctx, **kwargs)`` with ``ctx`` a :class:`kloyst.queue.TaskContext`
    (its own transaction and tenant scope). A task enqueued with a ``vendor_id`` is skipped
    when that vendor has disabled the plugin by the time it runs.
    Not firstresult.
    """


@hookspec
def kloyst_outbox_handlers():
    """Declare which outbox topics the plugin delivers.

    Called: once per process, while the queue is built, on every installed plugin.
    Returns: a dict ``{topic: handler}``; ``handler(ctx, event)`` receives a
    :class:`kloyst.queue.TaskContext` and the :class:`kloyst.outbox.OutboxEvent`.
    Handlers must be idempotent: the outbox delivers at least once. Two plugins claiming the
    same topic stop start-up.
    Not firstresult.
    """


@hookspec
def kloyst_migration_dirs():
    """Point alembic at migration versions the plugin keeps somewhere unusual (optional).

    Optional: Kloyst finds ``migrations/versions`` in the directory of every installed plugin's
    module by itself (``kloyst_plugins/<p>/plugin.py`` → ``kloyst_plugins/<p>/migrations/versions``);
    implement this hook only for revisions kept anywhere else. A directory named both ways counts once.
    Called: by ``kloyst db upgrade|current|check`` and by the test database fixture, on every
    installed plugin.
    Returns: a list of absolute directory paths holding alembic revision files. The plugin's
    first revision carries ``branch_labels = ("<plugin>",)``, ``down_revision = None`` and
    ``depends_on`` naming the core revision it needs (e.g. ``"0001_core"``).
    Not firstresult.
    """


@hookspec
def kloyst_cli_commands(subparsers):
    """Add subcommands to the ``kloyst`` command line.

    Called: once when ``kloyst`` starts, on every installed plugin, before arguments are parsed.
    Args:
        subparsers: the ``argparse`` sub-parser collection; add a parser and set its
            ``handler`` default to ``func(args) -> int`` (the exit status).
    Returns: nothing.
    Not firstresult.
    """


@hookspec
def kloyst_encrypted_fields():
    """Declare the columns the plugin encrypts with the data keyring, so key rotation reaches them.

    Called: by ``kloyst keys rotate`` and ``kloyst keys status``, on every installed plugin.
    Returns: a list of :class:`kloyst.key_rotation.EncryptedFields`, one per table: the model,
    ``columns`` (``{column: field name of the associated data}``), ``vendor`` (the column
    holding the vendor id of the associated data, ``"vendor_id"`` by default, or a constant
    ``uuid.UUID`` for rows of no vendor), ``kid_column`` (``"enc_kid"``) and ``primary_key``
    (``"id"``). Whatever writes those columns must seal them with ``registry["kloyst.cipher"]``
    and set the key-id column to its ``active_kid``. A table declared twice stops the command.
    Not firstresult: every plugin's list is collected.
    """


@hookspec
def kloyst_merge_strategies():
    """Offer ways to merge an imported row into a contact that already exists (a tenant hook).

    Called: when a vendor confirms an import's mapping and while its chunks run, only on the
    plugins that vendor has enabled; a strategy whose plugin the vendor has not enabled is
    unknown to that vendor (422). The contacts plugin registers the built-ins
    (``SKIP_DUPLICATES``, ``MERGE_LABELS``, ``UPDATE_METADATA``, ``FULL_REPLACE``) through this
    same hook.
    Returns: a list of :class:`kloyst.api.MergeStrategy`; names are
    upper-case and unique across plugins.
    Not firstresult: every enabled plugin's list is collected.
    """


@hookspec(historic=True)
def kloyst_addhooks(pluginmanager):
    """Add hook specifications of the plugin's own, for other plugins to implement.

    Called: on every installed plugin the moment it is registered (a historic hook, as pytest's
    ``pytest_addhooks``), before ``check()`` validates implementations, so implementations of
    the new hooks by plugins registered earlier or later are validated all the same.
    Args:
        pluginmanager: the :class:`kloyst.plugins.manager.KloystPluginManager`; call
            ``pluginmanager.add_hookspecs(module_or_class)`` with specs marked by
            ``kloyst.api.hookspec`` and named ``kloyst_<plugin>_<hook>``.
    Returns: nothing. Call the new hooks with ``pluginmanager.hook.<name>(...)`` (every installed
    plugin) or ``request.tenant_hooks.<name>(...)`` / ``pm.for_plugins(name, ctx.plugins)(...)``
    (the vendor's enabled plugins only).
    Not firstresult.
    """


@hookspec
def kloyst_event_types():
    """Say which domain event types the plugin's ``kloyst_vendor_event`` wants.

    Called: once per process, the first time an event is recorded or delivered, on every
    installed plugin that implements it.
    Returns: a list of :class:`kloyst.events.Event` subclasses (``events.ImportCompleted``…) or
    their names; :class:`kloyst.events.Event` itself means every type. An event type that no
    installed plugin wants is never written (it costs nothing). A plugin that implements
    ``kloyst_vendor_event`` without this hook gets ``kloyst.events.LEGACY_EVENTS`` only, the types
    that existed before the catalogue (``docs/events.md``).
    Not firstresult: every plugin's list is collected, per plugin.
    """


@hookspec
def kloyst_vendor_event(event, ctx):
    """React to a domain event of a vendor that has this plugin enabled (a tenant hook).

    Called: by the worker, after the transaction that recorded the event has committed
    (events travel through the outbox), only on plugins the event's vendor has enabled and
    that subscribe to the event's type (``kloyst_event_types``).
    Args:
        event: a :class:`kloyst.events.DomainEvent`: ``id`` (the outbox event's id, the same on
            every redelivery: the idempotency key), ``name`` in past tense such as
            ``"ImportCompleted"``, ``vendor_id``, ``occurred_at``, ``payload`` (the JSON fields) and
            ``data`` (the typed :class:`kloyst.events.Event`, e.g. ``ImportCompleted(import_id,
            created, updated, skipped, failed)``). The catalogue is ``docs/events.md``.
        ctx: a :class:`kloyst.queue.TaskContext` scoped to the event's vendor.
    Returns: nothing. Delivery is at least once: dedupe on ``event.id`` to stay idempotent.
    Not firstresult.
    """


@hookspec
def kloyst_background_services(registry, mode, heartbeat):
    """Start the plugin's long-running loops beside a service mode (the message sender, for one).

    Called: once per process by ``kloyst run``, after the mode's own parts started, on every
    installed plugin.
    Args:
        registry: the application registry (settings, session factory, queue…).
        mode: the ``SERVICE_TYPE`` being run (``"WORKER"``, ``"ALL"``…); start only what belongs there.
        heartbeat: this process's :class:`kloyst.heartbeat.Heartbeat`. Work the service claims should
            name ``heartbeat.id`` as its owner, so that other processes take it back within seconds
            when this one dies; ``heartbeat.healthy`` is False while the process cannot prove it is
            alive, and then nothing new should be claimed.
    Returns: a list of objects with ``stop(timeout)``; each is already running, and is stopped
    (and waited for, up to ``timeout`` seconds) when the process receives SIGTERM, before the
    heartbeat's row is deleted. A service with an ``is_alive()`` method is also watched by the
    metrics listener's ``/healthz``.
    Not firstresult.
    """


@hookspec
def kloyst_webhook_changes(changes, ctx):
    """Apply the Meta webhook changes that concern one vendor (a tenant hook).

    Called: by the webhook drainer, after the deliveries were stored, in one transaction per
    vendor and batch, only on the plugins that vendor has enabled.
    Args:
        changes: a list of :class:`kloyst.webhooks.WebhookChange` (``field``, ``value``,
            ``meta_waba_id``, ``meta_phone_number_id``, ``delivery_id``, ``received_at``), in
            the order Meta sent them. Each plugin picks the fields it handles.
        ctx: a :class:`kloyst.queue.TaskContext` scoped to the vendor.
    Returns: nothing. Deliveries are at least once and may come out of order: apply idempotently.
    Raises: anything to have the delivery applied again later (with backoff, a bounded number of
    times); :class:`kloyst.webhooks.RetryLater` when a change names something not recorded yet.
    Not firstresult.
    """


@hookspec
def kloyst_webhook_vendors(meta_waba_id, meta_phone_number_id, db):
    """Say which vendors a Meta webhook change belongs to.

    Called: by the webhook drainer for every stored change, on every installed plugin (a
    configuration hook: the vendor is what it asks for), before ``kloyst_webhook_changes``.
    Args:
        meta_waba_id: the change's ``entry.id``.
        meta_phone_number_id: ``value.metadata.phone_number_id``, or None for account-level fields.
        db: a platform-wide (unscoped) session in the drainer's transaction; read only.
    Returns: a list of vendor ids (may be empty).
    Not firstresult: the answers are united.
    """


@hookspec
def kloyst_pricing_rules():
    """Offer rules that adjust a quotation's prices: fees, markups, discounts (a tenant hook).

    Called: by the pricing plugin's QuotationService each time it prices a quotation, only on the
    plugins the quoted vendor has enabled. The pricing plugin's own platform fee rules (markup,
    per-message fee, minimum charge) come through this same hook.
    Returns: a list of :class:`kloyst.api.PricingRule`; names are unique across
    plugins. Rules run in ascending ``order``, then by name.
    Not firstresult: every enabled plugin's list is collected.
    """


@hookspec
def kloyst_messages_settled(conn, settled):
    """Learn that priced messages reached a money-relevant end: sent, failed before sending, or undelivered.

    Called: by the messages plugin in the same transaction that records the outcome (the sender's
    outcome writer, the status webhook), on every installed plugin, only for messages that carry a
    price (``message_log.price_micros``); messages without one never reach this hook.
    Args:
        conn: the SQLAlchemy ``Connection`` of that transaction; write with it so the money moves
            exactly when the message state does (both commit, or neither).
        settled: a list of :class:`kloyst.api.SettledMessage` (``message_id``,
            ``vendor_id``, ``campaign_id``, ``hold_id``, ``price_micros``, ``outcome``: ``"sent"``,
            ``"failed"`` (never sent), ``"undelivered"`` (sent, then reported failed by Meta),
            ``"free"`` (Meta's pricing says it charges nothing for it) or ``"repriced"`` (Meta
            charged another category; ``price_micros`` is that category's price)).
    Returns: nothing. A message can be reported more than once (a redelivered webhook): stay
    idempotent per message and outcome.
    Not firstresult.
    """


@hookspec
def kloyst_metrics(registry):
    """Declare the plugin's scrape-time gauges: state read from the database when Prometheus scrapes.

    Called: once per process, while the application is configured, on every installed plugin.
    Args:
        registry: the application registry (settings, engine, session factory, queue…).
    Returns: a list of prometheus_client collectors, each with ``collect()`` and ``describe()``
    (``describe()`` lists the metric families without reading anything); subclass
    :class:`kloyst.metrics.collectors.DatabaseCollector` for a guarded, cached database read.
    They are exported only by the processes that serve shared gauges (OUTBOX and ALL), so
    replicas do not repeat the queries. Names start with ``kloyst_``; a query must be cheap on
    a table of millions of rows (an index answers it). Counters the plugin increments as
    things happen are not returned here: they live in :mod:`kloyst.metrics.definitions`.
    Not firstresult: every plugin's list is collected.
    """


@hookspec
def kloyst_retention_policies(settings):
    """Say what of the plugin's data expires, and after how long (a platform hook).

    Called: by the retention pass (``kloyst db prune`` and the OUTBOX process's timer, see
    :mod:`kloyst.retention`), on every installed plugin: expiry does not depend on which vendors
    enabled the plugin.
    Args:
        settings: the application's settings (where the plugin keeps files, for a policy that deletes them).
    Returns: a list of :class:`kloyst.api.RetentionPolicy`; names (``"<plugin>.<data>"``) are
    unique across plugins. Each policy's setting is also declared in ``kloyst_settings``, with a
    default an operator would expect and its reason in ``help``; document both in the plugin's docs.
    Not firstresult: every plugin's list is collected.
    """


@hookspec
def kloyst_demo_data(db, vendor_id):
    """Seed what the embedded default's demo vendor needs to try the plugin end to end.

    Called: once, by ``kloyst run`` on an empty embedded (SQLite) database, right after it created
    the demo vendor and enabled every installed plugin for it; on every installed plugin. Never
    called against PostgreSQL (staging and production start empty).
    Args:
        db: a platform-wide (unscoped) session in the transaction that created the demo vendor.
        vendor_id: the demo vendor's id.
    Returns: nothing. Say what was seeded in the plugin's docs.
    Not firstresult.
    """
