"""The ``kloyst`` command line.

Subcommands come through the ``kloyst_cli_commands`` hook, the core's own included
(:mod:`kloyst.cli.commands`), so a plugin adds a command exactly as the core does.
Every command takes the ini file as its argument and loads the same plugins the
application loads.
"""

from __future__ import annotations

import argparse
import sys

from kloyst.config import ConfigurationError
from kloyst.errors import ApiError
from kloyst.plugins import build_plugin_manager


def build_parser(pm) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kloyst", description="Kloyst: multi-tenant WhatsApp Business backend.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for name in pm.infos:
        pm.for_plugins("kloyst_cli_commands", [name])(subparsers=subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        pm = build_plugin_manager()
        args = build_parser(pm).parse_args(argv)
        return int(args.handler(args) or 0)
    except ConfigurationError as exc:
        print(f"kloyst: {exc}", file=sys.stderr)
        return 2
    except ApiError as exc:  # a service refused the input (weak password, taken email): say why, no traceback
        print(f"kloyst: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
