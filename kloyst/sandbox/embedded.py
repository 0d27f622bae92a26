"""The sandbox `kloyst run` serves beside the embedded default, so messaging works with no Meta account.

It answers at ``kloyst.meta.graph_url`` (development.ini: http://127.0.0.1:6590) with Meta's
~100 ms latency, knows one demo WABA with a 1,000-mps and an 80-mps number and two approved
templates, and posts signed status and inbound webhooks to this Kloyst's own
``/webhook/whatsapp``. Register the demo WABA (any token) and its numbers and templates sync.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from kloyst.sandbox.server import SandboxServer
from kloyst.sandbox.state import Behaviour, PhoneNumber, SandboxState, Template

DEMO_WABA_ID = "200000000000001"
DEMO_NUMBERS = (("100000000000001", 1000), ("100000000000002", 80))
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


def start_embedded(settings) -> SandboxServer:
    address = urlsplit(settings["kloyst.meta.graph_url"])
    webhook = f"http://{settings['kloyst.http.host']}:{settings['kloyst.http.port']}/webhook/whatsapp"
    state = SandboxState(app_secret=settings["kloyst.meta.app_secret"],
                         behaviour=Behaviour(latency_ms=100.0, webhook_url=webhook))
    seed(state)
    return SandboxServer(state, host=address.hostname or "127.0.0.1", port=address.port or 80).start()
