"""The core's own subcommands: run, db, create-admin, plugins, keys."""

from __future__ import annotations

import getpass
import os
import secrets
import signal
import sys
import threading
from pathlib import Path

from pydantic import EmailStr
from sqlalchemy import func, select

from kloyst import retention, runner
from kloyst.accounts.models import Role, User, Vendor
from kloyst.auth.passwords import hash_password
from kloyst.auth.services import create_platform_admin
from kloyst.cli.bootstrap import ensure_var_dirs, load
from kloyst.config import ConfigurationError
from kloyst.db import migrate, session_scope, tenancy, utcnow
from kloyst.http.validation import Schema, parse
from kloyst.key_rotation import DEFAULT_BATCH, TableReport, encrypted_tables, key_usage, rotate_table
from kloyst.plugins.models import VendorPlugin
from kloyst.sandbox.embedded import SANDBOX_WABA_HINT, start_embedded

# example.com is reserved for examples (RFC 2606) and, unlike .local, passes the sign-in email check.
DEMO_EMAIL = "demo@example.com"


def _ini(parser) -> None:
    parser.add_argument("ini", help="the ini file, e.g. development.ini or staging.ini")


def cmd_run(args) -> int:
    flag = runner.check_service_type(args.service_type) if args.service_type is not None else None
    app, registry = load(args.ini, runs_service=True, service_type=flag)  # the flag beats SERVICE_TYPE
    mode = registry.settings["kloyst.service_type"]
    ensure_var_dirs(registry)
    engine = registry["kloyst.engine"]
    pm = registry["kloyst.plugin_manager"]
    if args.migrate or engine.dialect.name == "sqlite":
        # The embedded default migrates itself; elsewhere migrations run once, before the services start.
        migrate.upgrade(pm, engine)
    elif migrate.current(pm, engine) != migrate.heads(pm, engine):
        raise ConfigurationError("the database is not at the latest migration: run `kloyst db upgrade "
                                 f"{args.ini}` first (or pass --migrate)")
    first_run_note = _first_run_account(registry) if engine.dialect.name == "sqlite" else None
    sandbox = None
    if registry.settings["kloyst.meta.embedded_sandbox"] and mode == "ALL":
        sandbox = start_embedded(registry.settings)
        print(f"Meta sandbox at {sandbox.url}: register a WABA with POST {registry.settings['kloyst.api.prefix']}"
              f"/wabas; {SANDBOX_WABA_HINT}", flush=True)

    def announce(servers) -> None:
        for server in servers:
            print(f"Kloyst ({mode}) listening on http://{server.effective_host}:{server.effective_port}"
                  f"  (health: /healthz, API: {registry.settings['kloyst.api.prefix']}/…)", flush=True)
        if first_run_note:
            print(first_run_note, flush=True)
        if mode == "ALL":
            print(f"Mail (verification, password reset) is written to {registry.settings['kloyst.mail.file_dir']}/; "
                  f"logs to {registry.settings['kloyst.log.dir']}/. Stop with Ctrl-C.", flush=True)

    try:
        return runner.run(mode, app, registry, on_listening=announce)
    finally:
        if sandbox is not None:
            sandbox.close()


def _first_run_account(registry) -> str | None:
    """On an empty embedded database, create a demo vendor owner and say how to sign in with it.

    The password is printed on the first run only: later runs say where the note that keeps it
    is (``var/first-run.txt``, readable by its owner only), so it does not reach every log of
    every restart.
    """

    settings = registry.settings
    note_file = Path(settings["kloyst.here"]) / "var" / "first-run.txt"
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        if db.scalar(select(func.count()).select_from(User)):
            return (f"Demo vendor owner {DEMO_EMAIL}: its password and sign-in line are in {note_file}"
                    if note_file.exists() else None)
        password = secrets.token_urlsafe(12)
        vendor = Vendor(name="Demo vendor")
        db.add(vendor)
        db.flush()
        db.add(User(vendor_id=vendor.id, email=DEMO_EMAIL, name="Demo owner", role=Role.OWNER,
                    password_hash=hash_password(password), email_verified_at=utcnow()))
        # The demo vendor tries everything: every installed plugin on, requirements first.
        pm = registry["kloyst.plugin_manager"]
        for name, info in pm.infos.items():
            if not info.meta.essential:
                db.add(VendorPlugin(vendor_id=vendor.id, plugin=name))
        db.flush()
        # Plugins give the demo what it needs to be tried end to end (a rate card, a funded wallet…).
        pm.hook.kloyst_demo_data(db=db, vendor_id=vendor.id)
    base = settings["kloyst.http.public_url"].rstrip("/") + settings["kloyst.api.prefix"]
    note = (
        f"First run: created the demo vendor owner {DEMO_EMAIL} with password {password}\n"
        f"Sign in:  curl -s -X POST {base}/auth/login -H 'Content-Type: application/json' "
        f"-d '{{\"email\": \"{DEMO_EMAIL}\", \"password\": \"{password}\"}}'\n"
        "(this note is kept in " + str(note_file) + ")"
    )
    note_file.parent.mkdir(parents=True, exist_ok=True)
    # Created owner-only from the start: the note holds a password.
    with os.fdopen(os.open(note_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(note + "\n")
    return note


def cmd_db(args) -> int:
    _, registry = load(args.ini)
    ensure_var_dirs(registry)
    engine = registry["kloyst.engine"]
    pm = registry["kloyst.plugin_manager"]
    if args.action == "prune":
        return _prune(registry, args.only)
    if args.action == "upgrade":
        migrate.upgrade(pm, engine, args.revision)
        print("database at", ", ".join(sorted(migrate.current(pm, engine))))
        return 0
    current, heads = migrate.current(pm, engine), migrate.heads(pm, engine)
    if args.action == "current":
        print("current:", ", ".join(sorted(current)) or "(empty database)")
        print("heads:  ", ", ".join(sorted(heads)))
        return 0
    problems = []
    if current != heads:
        problems.append(f"database is at {sorted(current) or 'nothing'}, the code expects {sorted(heads)}: "
                        f"run kloyst db upgrade {args.ini}")
    else:
        drift = migrate.model_drift(pm, engine)
        if drift:
            problems.append("models and migrations disagree:\n    " + "\n    ".join(map(repr, drift)))
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 1
    print("database is up to date and matches the models")
    return 0


def _prune(registry, only: list[str] | None) -> int:
    """``kloyst db prune``: one retention pass now, a line per policy as it finishes."""
    policies = retention.policies(registry)
    unknown = sorted(set(only or ()) - {policy.name for policy in policies})
    if unknown:
        print(f"no retention policy named {', '.join(unknown)}; there are: "
              + ", ".join(policy.name for policy in policies), file=sys.stderr)
        return 2

    def report(pruned: retention.Pruned) -> None:
        if pruned.days <= 0:
            print(f"{pruned.policy}: kept forever (its setting is 0 days)")
        else:
            print(f"{pruned.policy}: removed {pruned.removed} older than {pruned.days} days "
                  f"(before {pruned.cutoff:%Y-%m-%d %H:%M}) in {pruned.seconds:.1f} s")

    stop = threading.Event()  # SIGTERM/SIGINT: finish the batch in hand (one short transaction), then stop
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    retention.Pruner(registry, policies, stop=stop).run(only=only or (), progress=report)
    return 130 if stop.is_set() else 0


def cmd_create_admin(args) -> int:
    class AdminEmail(Schema):
        email: EmailStr

    # The address must pass the same check as the sign-in body, or the admin could never sign in.
    parse(AdminEmail, {"email": args.email})
    _, registry = load(args.ini)
    password = os.environ.get("KLOYST_ADMIN_PASSWORD") or (
        getpass.getpass("Password for the new platform admin: ") if sys.stdin.isatty()
        else sys.stdin.readline().strip())
    with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
        user = create_platform_admin(db, email=args.email, name=args.name or "", password=password)
        user_id = user.id
    print(f"platform admin {args.email} created (id {user_id})")
    return 0


def cmd_plugins(args) -> int:
    _, registry = load(args.ini)
    pm = registry["kloyst.plugin_manager"]
    for info in pm.infos.values():
        flags = " essential" if info.meta.essential else ""
        requires = f" requires: {', '.join(info.meta.requires)}" if info.meta.requires else ""
        print(f"{info.name} {info.version} ({info.distribution or 'local'}){flags}{requires}")
        if info.meta.description:
            print(f"    {info.meta.description}")
        hooks = sorted(h.name for h in pm.get_hookcallers(pm.get_plugin(info.name)) or ())
        print(f"    hooks: {', '.join(hooks) or '(none)'}")
    return 0


def _encrypted_tables(registry, names):
    """The tables the installed plugins encrypt (``names`` only, when given), or None after saying which are not."""
    try:
        return encrypted_tables(registry["kloyst.plugin_manager"], names)
    except KeyError as exc:
        known = ", ".join(spec.name for spec in encrypted_tables(registry["kloyst.plugin_manager"]))
        print(f"no installed plugin encrypts the table(s) {exc.args[0]}; encrypted tables: {known}",
              file=sys.stderr)
        return None


def cmd_keys_rotate(args) -> int:
    if args.batch < 1:
        print("--batch must be at least 1", file=sys.stderr)
        return 2
    _, registry = load(args.ini)
    tables = _encrypted_tables(registry, args.table)
    if tables is None:
        return 2
    cipher = registry["kloyst.cipher"]
    print(f"re-encrypting {', '.join(spec.name for spec in tables)} with data key {cipher.active_kid!r}")

    def progress(report: TableReport) -> None:
        print(f"  {report.table}: {report.rotated} re-encrypted, {report.failed} failed so far", flush=True)

    reports = [rotate_table(registry["kloyst.session_factory"], cipher, spec, batch=args.batch, progress=progress)
               for spec in tables]
    print(f"done with data key {cipher.active_kid!r}:")
    for report in reports:
        print(f"  {report.table}: {report.rotated} re-encrypted, {report.relabelled} key id corrected, "
              f"{report.failed} failed")
    failed = [report for report in reports if report.failed]
    for report in failed:
        print(f"{report.table}: {report.failed} row(s) could not be decrypted with any key in "
              f"kloyst.crypto.data_keys and keep their old ciphertext (first ids: "
              f"{', '.join(map(str, report.failed_ids))})", file=sys.stderr)
    return 1 if failed else 0


def cmd_keys_status(args) -> int:
    _, registry = load(args.ini)
    tables = _encrypted_tables(registry, args.table)
    if tables is None:
        return 2
    ring = list(registry.settings["kloyst.crypto.data_keys"])
    active = registry["kloyst.cipher"].active_kid
    print(f"active data key: {active!r}; keyring: {', '.join(ring)}")
    stale: dict[str, int] = {}
    for table, counts in key_usage(registry["kloyst.session_factory"], tables).items():
        if not counts:
            print(f"  {table}: no rows")
        for kid, rows in counts.items():
            note = "" if kid in ring else "  (not in the keyring: these rows cannot be decrypted)"
            print(f"  {table}: {kid} {rows}{note}")
            if kid != active:
                stale[kid] = stale.get(kid, 0) + rows
    if stale:
        print(f"{sum(stale.values())} row(s) still use keys other than {active!r} "
              f"({', '.join(f'{kid}: {rows}' for kid, rows in stale.items())}): keep those keys and run "
              f"kloyst keys rotate {args.ini}")
        return 1
    removable = [kid for kid in ring if kid != active]
    print(f"every row uses the active key {active!r}: "
          + (f"{', '.join(removable)} may be removed from the keyring" if removable else "no other key to remove"))
    return 0


def add_commands(subparsers) -> None:
    """Called by the core plugin's ``kloyst_cli_commands``."""
    run = subparsers.add_parser("run", help="run a service mode (SERVICE_TYPE) from an ini file")
    _ini(run)
    run.add_argument("--service-type", help="override SERVICE_TYPE: API_GATEWAY, WEBHOOK, WORKER, OUTBOX or ALL")
    run.add_argument("--migrate", action="store_true", help="apply migrations before starting")
    run.set_defaults(handler=cmd_run)

    db = subparsers.add_parser("db", help="database migrations, and pruning what has expired")
    db.add_argument("action", choices=["upgrade", "current", "check", "prune"],
                    help="prune: remove the data older than its retention setting (docs/retention.md)")
    _ini(db)
    db.add_argument("--revision", default="heads", help="upgrade target (default: every head)")
    db.add_argument("--only", action="append", metavar="POLICY",
                    help="prune: only this retention policy (repeatable; default: every one)")
    db.set_defaults(handler=cmd_db)

    admin = subparsers.add_parser("create-admin", help="create a platform administrator")
    _ini(admin)
    admin.add_argument("--email", required=True)
    admin.add_argument("--name", default="")
    admin.set_defaults(handler=cmd_create_admin)

    plugins = subparsers.add_parser("plugins", help="list installed plugins, versions and hooks")
    _ini(plugins)
    plugins.set_defaults(handler=cmd_plugins)

    keys = subparsers.add_parser("keys", help="data encryption keys: rotate, status")
    actions = keys.add_subparsers(dest="keys_action", metavar="ACTION")
    actions.required = True
    rotate = actions.add_parser("rotate", help="re-encrypt every encrypted table with the active data key")
    _ini(rotate)
    rotate.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="rows per transaction")
    rotate.add_argument("--table", action="append", help="only this table (repeatable; default: every table)")
    rotate.set_defaults(handler=cmd_keys_rotate)
    status = actions.add_parser("status", help="rows per table and data key id; exit 1 while any is not the active key")
    _ini(status)
    status.add_argument("--table", action="append", help="only this table (repeatable; default: every table)")
    status.set_defaults(handler=cmd_keys_status)
