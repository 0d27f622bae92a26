"""The imports plugin: metadata and hook implementations."""

from __future__ import annotations

from kloyst.api import hookimpl, PluginMeta, Setting
from kloyst_plugins.imports import retention, scanning

plugin_meta = PluginMeta(description="Contact imports from CSV and XLSX: hardened upload, virus scan, column "
                                     "mapping, merge strategies, parallel chunks.", requires=("contacts",))
model_modules = ("kloyst_plugins.imports.models",)


@hookimpl
def kloyst_settings():
    return [
        Setting("imports.storage_dir", "IMPORTS_STORAGE_DIR", "var/imports",
                help="Where uploaded files are kept, one folder per vendor, under generated names."),
        Setting("imports.max_upload_bytes", "IMPORTS_MAX_UPLOAD_BYTES", 50 * 1024 * 1024, int,
                help="Largest file accepted for import (413 beyond it)."),
        Setting("imports.clamd_address", "CLAMD_ADDRESS", "",
                help="clamd to scan uploads with: tcp://127.0.0.1:3310 or unix:///run/clamav/clamd.ctl. "
                     "Empty: uploads wait in UPLOADED, never treated as clean, until a scanner is configured."),
        Setting("imports.scan", "IMPORTS_SCAN", scanning.REQUIRED, scanning.as_scan_mode,
                help="required: every upload is scanned by clamd before it is parsed. off: development on this "
                     "machine only (development.ini): nothing is scanned and every import says so; refused when "
                     "the API can be reached from beyond this machine or a scanner is configured."),
        Setting("imports.chunk_rows", "IMPORTS_CHUNK_ROWS", 5000, int, help="Rows per import chunk."),
        Setting("imports.xlsx_max_member_bytes", "IMPORTS_XLSX_MAX_MEMBER_BYTES", 96 * 1024 * 1024, int,
                help="Zip guard: the most one XLSX part may inflate to (~330,000 rows by default; a worker needs "
                     "about twice this in memory). Bounds what the spreadsheet reader loads; see zipguard.py."),
        Setting("imports.xlsx_max_total_bytes", "IMPORTS_XLSX_MAX_TOTAL_BYTES", 160 * 1024 * 1024, int,
                help="Zip guard: the most all parts of an XLSX may inflate to together."),
        Setting("imports.xlsx_max_ratio", "IMPORTS_XLSX_MAX_RATIO", 100, int,
                help="Zip guard: the highest compression ratio a part (of 1 MiB or more) may have; higher is "
                     "how zip bombs look. This, with imports.max_upload_bytes, is what stops bombs."),
        retention.FILES,
    ]


@hookimpl
def kloyst_routes(config):
    # The one hook every process (server or CLI) calls while it is configured: the place to refuse
    # an unscanned mode that could be reached from beyond this machine, before anything runs.
    scanning.check_settings(config.get_settings())
    config.include(".views")


@hookimpl
def kloyst_retention_policies(settings):
    return [retention.policy(settings)]


@hookimpl
def kloyst_background_services(registry):
    """Nothing runs in the background; a process that will import unscanned files says so when it starts."""
    scanning.announce(registry.settings)
    return []


@hookimpl
def kloyst_tasks():
    from kloyst_plugins.imports import processing, tasks

    return [*tasks.TASKS, *processing.TASKS]


@hookimpl
def kloyst_cli_commands(subparsers):
    from kloyst_plugins.imports import cli

    cli.add_commands(subparsers)
