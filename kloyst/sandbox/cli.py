"""``kloyst sandbox <ini>``: run the Meta sandbox alone, signing webhooks with the ini's Meta app secret.

``kloyst sandbox inbound …``: a simulated customer writes to a business number of a running
sandbox (``kloyst sandbox`` or the one ``make run`` embeds), through ``POST
/_sandbox/customers/inbound`` (:mod:`kloyst.sandbox.inbound`).
"""

from __future__ import annotations

import argparse
import base64
import gc
import json
import mimetypes
import sys
import urllib.error
import urllib.request
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


MEDIA_OPTIONS = ("image", "video", "audio", "document", "sticker")


def _pair(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key or not value:
        raise argparse.ArgumentTypeError("expected ID=TITLE")
    return key, value


def _location(text: str) -> tuple[float, float]:
    try:
        latitude, longitude = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError("expected LATITUDE,LONGITUDE such as 52.52,13.40") from None
    return latitude, longitude


def inbound_request(args) -> dict:
    """The ``POST /_sandbox/customers/inbound`` body the command line describes."""
    body: dict = {"phone_number_id": args.number}
    for key in ("from", "user_id", "parent_user_id", "username", "name", "country", "timestamp"):
        value = getattr(args, key if key != "from" else "sender")
        if value is not None:
            body[key] = value
    if args.phone_withheld:
        body["phone_shared"] = False
    if args.context:
        body["context"] = {"id": args.context}
    kind = next((option for option in MEDIA_OPTIONS if getattr(args, option)), None)
    if kind is not None:
        path = Path(getattr(args, kind))
        mime_type = args.mime_type or mimetypes.guess_type(path.name)[0] or ""
        body.update(type=kind, media={"data_base64": base64.b64encode(path.read_bytes()).decode(),
                                      "mime_type": mime_type, "filename": path.name})
        if args.caption:
            body["media"]["caption"] = args.caption
    elif args.button:
        payload, _, text = args.button.partition("=")
        body.update(type="button", button={"payload": payload, "text": text or payload})
    elif args.reply or args.list_reply:
        reply_type = "button_reply" if args.reply else "list_reply"
        reply_id, title = args.reply or args.list_reply
        body.update(type="interactive", interactive={"type": reply_type, "id": reply_id, "title": title})
    elif args.location:
        body.update(type="location", location={"latitude": args.location[0], "longitude": args.location[1]})
    else:
        body.update(type="text", text=args.text if args.text is not None else "Hello")
    return body


def cmd_inbound(args) -> int:
    if args.sender is None and args.user_id is None and args.username is None:
        print("kloyst sandbox inbound: name the customer with --from, --user-id or --username", file=sys.stderr)
        return 2
    try:
        body = inbound_request(args)
    except OSError as exc:
        print(f"kloyst sandbox inbound: cannot read the media file: {exc}", file=sys.stderr)
        return 2
    request = urllib.request.Request(f"{args.url.rstrip('/')}/_sandbox/customers/inbound",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - a URL the user gave
            print(response.read().decode())
        return 0
    except urllib.error.HTTPError as exc:
        print(f"kloyst sandbox inbound: the sandbox refused: {exc.read().decode()}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kloyst sandbox inbound: no sandbox at {args.url}: {exc}", file=sys.stderr)
        return 1


def _inbound_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kloyst sandbox inbound",
        description="A simulated customer writes to a business number of a running sandbox; the sandbox posts the "
                    "message as a signed Meta webhook to its webhook URL and opens the customer-service window.")
    parser.add_argument("--url", default=f"http://127.0.0.1:{DEFAULT_PORT}",
                        help="the sandbox (default: %(default)s, where `make run` and `kloyst sandbox` serve it)")
    parser.add_argument("--number", default=DEMO_NUMBERS[0][0],
                        help="the business phone number id written to (default: %(default)s, the demo number)")
    who = parser.add_argument_group("the customer (at least one)")
    who.add_argument("--from", dest="sender", metavar="PHONE", help="the customer's phone number, E.164")
    who.add_argument("--user-id", help="the customer's business-scoped user ID (BSUID), e.g. US.13491208655302741918")
    who.add_argument("--username", help="the customer's WhatsApp username; alone, a customer with no known phone")
    who.add_argument("--parent-user-id", help="a parent BSUID, e.g. US.ENT.11815799212886844830")
    who.add_argument("--name", help="the profile name (default: Sandbox User)")
    who.add_argument("--phone-withheld", action="store_true",
                     help="a username customer who has not shared the phone number: no wa_id or from in the webhook")
    who.add_argument("--country", help="the BSUID's country for a username-only customer (default: US)")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--text", help="a text message (the default, 'Hello')")
    for option in MEDIA_OPTIONS:
        what.add_argument(f"--{option}", metavar="FILE", help=f"an {option} message with this file's bytes"
                          if option[0] in "aeiou" else f"a {option} message with this file's bytes")
    what.add_argument("--button", metavar="PAYLOAD[=TEXT]", help="a template quick-reply button press")
    what.add_argument("--reply", type=_pair, metavar="ID=TITLE", help="an interactive reply-button press")
    what.add_argument("--list-reply", type=_pair, metavar="ID=TITLE", help="an interactive list choice")
    what.add_argument("--location", type=_location, metavar="LAT,LON", help="a shared location")
    parser.add_argument("--caption", help="the caption of an image, video or document")
    parser.add_argument("--mime-type", help="the media's type (default: guessed from the file name)")
    parser.add_argument("--context", metavar="WAMID", help="the business message this one replies to")
    parser.add_argument("--timestamp", type=int, metavar="UNIX_SECONDS",
                        help="when the customer wrote (default: now); the window opens from it")
    parser.set_defaults(handler=cmd_inbound)
    return parser


class _SandboxParser(argparse.ArgumentParser):
    """``kloyst sandbox <ini> [options]``, and ``kloyst sandbox inbound [options]`` handed to its own parser.

    The ini stays the first argument of ``kloyst sandbox`` (scripts and docs run it so), so
    ``inbound`` is recognised by name rather than declared as a subcommand.
    """

    inbound: argparse.ArgumentParser

    def parse_known_args(self, args=None, namespace=None):
        if args and args[0] == "inbound":
            return self.inbound.parse_known_args(args[1:], namespace)
        return super().parse_known_args(args, namespace)


DEFAULT_PORT = 6590


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "sandbox", help="run the Meta Cloud API sandbox (tests, benchmarks, development)",
        epilog="kloyst sandbox inbound --help: simulate a customer writing to a running sandbox")
    parser.__class__ = _SandboxParser
    parser.inbound = _inbound_parser()
    parser.add_argument("ini")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
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
