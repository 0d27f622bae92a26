"""``kloyst sandbox <ini>``: run the Meta sandbox alone, signing webhooks with the ini's Meta app secret."""

from __future__ import annotations

import argparse
import gc
import json
from pathlib import Path

import plaster

from kloyst.config import CORE_SETTINGS, ConfigurationError, environment, resolve
from kloyst.sandbox.embedded import DEMO_NUMBERS, seed
from kloyst.sandbox.server import SandboxServer
from kloyst.sandbox.state import Behaviour, SandboxState


def _meta_settings(ini: str) -> dict:
    path = Path(ini)
    if not path.is_file():
        raise ConfigurationError(f"ini file {ini!r} not found")
    raw = dict(plaster.get_loader(str(path.resolve()), protocols=["wsgi"]).get_settings("app:main"))
    return resolve(raw, tuple(s for s in CORE_SETTINGS if s.key.startswith("kloyst.meta.")), environment())


def _number(text: str) -> tuple[str, int]:
    number_id, _, mps = text.partition(":")
    if not number_id.isdigit() or not (mps == "" or (mps.isdigit() and int(mps) > 0)):
        raise argparse.ArgumentTypeError("expected PHONE_NUMBER_ID[:MPS], MPS a positive whole number")
    return number_id, int(mps or 1000)


def _seconds(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("expected a number of seconds, 0 or more")
    return value


def build_sandbox(args):
    settings = _meta_settings(args.ini)
    behaviour = Behaviour(latency_ms=args.latency_ms, webhook_url=args.webhook_url, access_token=args.access_token,
                          webhook_retry_horizon_seconds=args.webhook_retry_seconds,
                          webhook_retry_max_interval_seconds=args.webhook_retry_max_interval)
    state = SandboxState(app_secret=settings["kloyst.meta.app_secret"], behaviour=behaviour)
    seed(state, args.waba, args.number or DEMO_NUMBERS)
    return SandboxServer(state, host=args.host, port=args.port)


def cmd_sandbox(args) -> int:
    sandbox = build_sandbox(args)
    # Meta's clock does not stop for a garbage collection. Ours would: a full pass over the records of
    # tens of thousands of sends pauses every handler thread for tens of milliseconds, the requests that
    # arrive meanwhile are all "admitted" together afterwards, and that bunch reads as a sender breaking
    # its number's throughput. Keep what exists at start out of the passes, and make full passes rare.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    state = sandbox.state
    print(json.dumps({"url": sandbox.url, "graph_version": _meta_settings(args.ini)["kloyst.meta.graph_version"],
                      "waba_id": args.waba, "phone_numbers": {n.id: n.throughput for n in state.numbers.values()},
                      "latency_ms": state.behaviour.latency_ms, "webhook_url": state.behaviour.webhook_url}),
          flush=True)
    try:
        sandbox.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.close()
    return 0


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser("sandbox", help="run the Meta Cloud API sandbox (tests, benchmarks, development)")
    parser.add_argument("ini")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=6590)
    parser.add_argument("--latency-ms", type=float, default=100.0, help="delay before every Graph answer")
    parser.add_argument("--webhook-url", help="where signed status and inbound webhooks are posted")
    parser.add_argument("--waba", default="200000000000001",
                        help="the WABA id the sandbox's numbers and demo templates belong to")
    parser.add_argument("--number", type=_number, action="append",
                        help="PHONE_NUMBER_ID[:MPS], repeatable: a number sending at most MPS messages a second, "
                             "any positive whole number (Meta's tiers are 80 and 1000; 1000 if left out); "
                             "default: one 1000-mps and one 80-mps number")
    parser.add_argument("--webhook-retry-seconds", type=_seconds, metavar="SECONDS",
                        default=Behaviour.webhook_retry_horizon_seconds,
                        help="how long after its first attempt a failed webhook POST is still retried "
                             "(default: %(default)s)")
    parser.add_argument("--webhook-retry-max-interval", type=_seconds, metavar="SECONDS",
                        default=Behaviour.webhook_retry_max_interval_seconds,
                        help="the longest pause between two attempts of a failed webhook POST, in seconds; "
                             "pauses start at 0.5 s and double (default: %(default)s)")
    parser.add_argument("--access-token", help="the only Bearer token accepted (default: any non-empty token)")
    parser.set_defaults(handler=cmd_sandbox)
