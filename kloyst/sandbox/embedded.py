"""The sandbox `kloyst run` serves beside the embedded default, so messaging works with no Meta account.

It answers at ``kloyst.meta.graph_url`` (development.ini: http://127.0.0.1:6590) with Meta's
~100 ms latency and posts signed status and inbound webhooks to this Kloyst's own
``/webhook/whatsapp``. Any token is accepted.

**Every vendor gets its own WABA.** A WABA id is registered by one account only on Kloyst (two
vendors syncing one WABA would fight over its numbers), so a single demo WABA would leave every
vendor but the first unable to message. Instead every id of :data:`SANDBOX_WABA_IDS` (15 digits
starting with 2) is a sandbox WABA, made the first time Kloyst asks Meta about it: two numbers
of its own (1,000 and 80 messages a second) and the two approved templates, ``order_update``
and ``welcome``. The demo vendor's ``200000000000001`` has the numbers ``100000000000001`` and
``100000000000002``; any other id ``W`` has ``1`` + ``W[1:]`` followed by ``1`` and ``2``
(16 digits, so never another WABA's). A vendor registers any unused id, such as
``200000000000002``, with any access token, and its numbers and templates sync.

Customers are simulated as on the standalone sandbox: ``kloyst sandbox inbound --from +49…``
(or ``POST http://127.0.0.1:6590/_sandbox/customers/inbound``) makes one write to a number, and
the message reaches this Kloyst's webhook like Meta's would (:mod:`kloyst.sandbox.inbound`).
"""

from __future__ import annotations

import re
import threading
from urllib.parse import urlsplit

from kloyst.sandbox.server import GRAPH_PATH, SandboxServer
from kloyst.sandbox.state import Behaviour, PhoneNumber, SandboxState, Template

DEMO_WABA_ID = "200000000000001"
DEMO_NUMBERS = (("100000000000001", 1000), ("100000000000002", 80))
SANDBOX_WABA_IDS = re.compile(r"^2[0-9]{14}$")
SANDBOX_WABA_HINT = ("every vendor registers its own WABA: any 15-digit id starting with 2 that no other "
                     f"vendor uses (the demo vendor's is {DEMO_WABA_ID}; try 200000000000002), any access token")
DEMO_TEMPLATES = (
    Template(id="300000000000001", name="order_update", language="en_US", category="UTILITY", components=[
        {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}", "example": {"header_text": ["A-1001"]}},
        {"type": "BODY", "text": "Hi {{1}}, your order ships on {{2}}.",
         "example": {"body_text": [["Ann", "Monday"]]}}]),
    Template(id="300000000000002", name="welcome", language="en_US", category="MARKETING",
             parameter_format="NAMED", components=[
                 {"type": "BODY", "text": "Hello {{first_name}}! Reply STOP to opt out.",
                  "example": {"body_text_named_params": [{"param_name": "first_name", "example": "Ann"}]}}]),
)


def seed(state: SandboxState, waba_id: str = DEMO_WABA_ID, numbers=DEMO_NUMBERS, templates=DEMO_TEMPLATES) -> None:
    """Give the sandbox its demo WABA: numbers ``(id, mps)`` and approved templates."""
    for index, (number_id, mps) in enumerate(numbers):
        state.add_number(PhoneNumber(id=number_id, waba_id=waba_id, throughput=mps,
                                     display_phone_number=f"+1 555-000-{index + 1:04d}"))
    for template in templates:
        state.add_template(waba_id, Template(**vars(template)))


def sandbox_numbers(waba_id: str) -> tuple[tuple[str, int], ...]:
    """The numbers ``(id, mps)`` of a sandbox WABA (module docstring)."""
    if waba_id == DEMO_WABA_ID:
        return DEMO_NUMBERS
    return tuple((f"1{waba_id[1:]}{index}", mps) for index, (_, mps) in enumerate(DEMO_NUMBERS, start=1))


def provision(state: SandboxState, waba_id: str) -> bool:
    """Make the sandbox WABA ``waba_id`` if it does not exist yet; False for an id outside the scheme.

    Its numbers are shown as ``+1 555-NNN-000i`` (NNN from the id) and its templates are the demo
    ones under ids of their own, as Meta's template ids are unique across WABAs.
    """
    if waba_id in state.templates:
        return True
    if not SANDBOX_WABA_IDS.match(waba_id):
        return False
    serial = int(waba_id) % 1000
    for index, (number_id, mps) in enumerate(sandbox_numbers(waba_id), start=1):
        state.add_number(PhoneNumber(id=number_id, waba_id=waba_id, throughput=mps,
                                     display_phone_number=f"+1 555-{serial:03d}-{index:04d}"))
    for template in DEMO_TEMPLATES:
        state.add_template(waba_id, Template(**{**vars(template), "id": state.new_id()}))
    return True


class EmbeddedSandbox(SandboxServer):
    """The sandbox of `kloyst run`: a sandbox WABA exists from the first Graph call that names it."""

    def __init__(self, state: SandboxState, host: str, port: int) -> None:
        super().__init__(state, host=host, port=port)
        self._provisioning = threading.Lock()  # two first calls for one WABA make it once

    def graph(self, method: str, path: str, query: dict, body, authorization: str,
              arrived: float | None = None) -> tuple[int, dict]:
        match = GRAPH_PATH.match(path)
        if match is not None and (match.group(3) in ("phone_numbers", "message_templates")
                                  or match.group(3) is None and SANDBOX_WABA_IDS.match(match.group(2))):
            with self._provisioning:
                provision(self.state, match.group(2))
        return super().graph(method, path, query, body, authorization, arrived)


def start_embedded(settings) -> SandboxServer:
    address = urlsplit(settings["kloyst.meta.graph_url"])
    webhook = f"http://{settings['kloyst.http.host']}:{settings['kloyst.http.port']}/webhook/whatsapp"
    state = SandboxState(app_secret=settings["kloyst.meta.app_secret"],
                         behaviour=Behaviour(latency_ms=100.0, webhook_url=webhook))
    seed(state)
    return EmbeddedSandbox(state, host=address.hostname or "127.0.0.1", port=address.port or 80).start()
