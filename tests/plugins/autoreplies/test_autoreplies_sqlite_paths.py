"""On the embedded default (SQLite, one writer, its own migrations) the same webhook gets the same auto-replies:
a keyword answer, one away message per interval, an opt-out confirmation, and nothing twice."""

from __future__ import annotations

import datetime as dt

import pytest
import webtest
from autoreplies_support import BERLIN_HOURS, Builder, CLOSED, inbound, RULES, SETTINGS

from kloyst.db import tenancy, utcnow
from kloyst.outbox.relay import relay_once
from kloyst.webhooks import deliveries as delivery_rows
from kloyst.webhooks.drainer import drain_once
from kloyst_plugins.autoreplies import plugin
from kloyst_plugins.autoreplies.services import DEFAULT_OPT_OUT_TEXT


@pytest.fixture
def embedded(embedded_config, monkeypatch):
    registry = embedded_config.registry
    monkeypatch.setattr(plugin, "utcnow", lambda: CLOSED)
    session = registry["kloyst.session_factory"]()
    tenancy.set_scope(session, tenancy.ALL_VENDORS)
    app = webtest.TestApp(embedded_config.make_wsgi_app(), extra_environ={"REMOTE_ADDR": "203.0.113.41"})
    yield registry, Builder(session, registry), app
    session.close()


def test_the_embedded_default_answers_keywords_away_and_stop_once_each(embedded):
    registry, build, app = embedded
    shop = build.shop("Embedded Co")
    app.post_json(RULES, {"keyword": "hours", "match": "prefix", "text": "9 to 5"}, headers=shop.headers, status=201)
    app.patch_json(SETTINGS, {**BERLIN_HOURS, "away_enabled": True, "away_text": "Closed."}, headers=shop.headers,
                   status=200)

    def write(text: str, *, wamid: str, minutes_ago: int = 1) -> None:
        body = inbound(shop, text, at=CLOSED - dt.timedelta(minutes=minutes_ago), wamid=wamid)
        delivery_rows.store(build.db, [(body, utcnow())], next_attempt_at=utcnow())
        build.db.commit()
        drain_once(registry)
        while relay_once(registry):
            pass

    write("hours please", wamid="wamid.lite.1")
    write("hours please", wamid="wamid.lite.1")  # Meta's redelivery of the same message
    write("anyone?", wamid="wamid.lite.2")
    write("hello??", wamid="wamid.lite.3")  # the away message went out a minute ago
    write("STOP", wamid="wamid.lite.4")
    assert build.texts(shop) == ["9 to 5", "Closed.", DEFAULT_OPT_OUT_TEXT]
    rule = app.get(RULES, headers=shop.headers).json["items"][0]
    assert rule["stats"]["hits"] == 1
