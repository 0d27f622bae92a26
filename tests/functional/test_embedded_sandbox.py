"""The sandbox `kloyst run` serves gives every vendor a WABA of its own, so every vendor can message.

Called through Kloyst's own Meta client, as the phone-number and template syncs call it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from kloyst.meta.client import MetaClient
from kloyst.meta.errors import MetaError
from kloyst.sandbox.embedded import DEMO_NUMBERS, DEMO_TEMPLATES, DEMO_WABA_ID, start_embedded
from kloyst.testing.processes import free_port

GRAPH_VERSION = "v23.0"


@pytest.fixture
def embedded():
    """The embedded sandbox on a free port, with a client that sends any token."""
    port = free_port()
    sandbox = start_embedded({"kloyst.meta.graph_url": f"http://127.0.0.1:{port}", "kloyst.http.host": "127.0.0.1",
                              "kloyst.http.port": free_port(), "kloyst.meta.app_secret": "embedded-test-secret"})
    sandbox.state.behaviour.latency_ms = 0
    client = MetaClient(sandbox.url, GRAPH_VERSION, "any-token", timeout=5)
    yield sandbox, client
    client.close()
    sandbox.close()


def test_the_demo_waba_keeps_its_numbers_and_templates(embedded):
    _, client = embedded
    assert {n["id"] for n in client.list_phone_numbers(DEMO_WABA_ID)} == {number for number, _ in DEMO_NUMBERS}
    templates = client.list_templates(DEMO_WABA_ID)
    assert {(t["id"], t["name"]) for t in templates} == {(t.id, t.name) for t in DEMO_TEMPLATES}


def test_any_other_sandbox_waba_id_is_a_waba_of_its_own_with_numbers_and_templates(embedded):
    _, client = embedded
    numbers = client.list_phone_numbers("200000000000002")
    assert sorted((n["id"], n["throughput"]["level"]) for n in numbers) == [
        ("1000000000000021", "HIGH"), ("1000000000000022", "STANDARD")]
    templates = client.list_templates("200000000000002")
    assert sorted(t["name"] for t in templates) == ["order_update", "welcome"]
    assert all(t["status"] == "APPROVED" for t in templates)
    demo_template_ids = {t.id for t in DEMO_TEMPLATES}
    assert not {t["id"] for t in templates} & demo_template_ids  # Meta's template ids are unique across WABAs


def test_two_vendors_wabas_share_no_number(embedded):
    _, client = embedded
    first = {n["id"] for n in client.list_phone_numbers("200000000000002")}
    second = {n["id"] for n in client.list_phone_numbers("200000000000003")}
    demo = {n["id"] for n in client.list_phone_numbers(DEMO_WABA_ID)}
    assert len(first) == len(second) == 2 and not (first & second or first & demo or second & demo)


def test_a_vendors_sandbox_number_sends_the_templates_of_its_own_waba(embedded):
    sandbox, client = embedded
    [fast, _] = sorted(n["id"] for n in client.list_phone_numbers("200000000000004"))
    wamid, _ = client.send_message(fast, {"messaging_product": "whatsapp", "to": "+12025550123", "type": "template",
                                        "template": {"name": "welcome", "language": {"code": "en_US"}, "components": [
                                            {"type": "body", "parameters": [{"type": "text", "text": "Ann",
                                                                             "parameter_name": "first_name"}]}]}})
    assert wamid.startswith("wamid.")
    assert sandbox.state.stats()["by_number"] == {fast: 1}


@pytest.mark.parametrize("waba_id", ["123", "300000000000001", "2000000000000001"])
def test_an_id_outside_the_sandbox_scheme_is_unknown_as_at_meta(embedded, waba_id):
    _, client = embedded
    with pytest.raises(MetaError) as refused:
        client.list_phone_numbers(waba_id)
    assert refused.value.code == 100


def test_first_calls_racing_for_one_waba_make_it_once(embedded):
    sandbox, client = embedded
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: client.list_templates("200000000000005"), range(16)))
    assert all(len(answer) == 2 for answer in answers)
    assert len(sandbox.state.templates["200000000000005"]) == 2
