"""``kloyst messages check``: 0 and a summary when every message agrees with Meta's stored statuses, 1 and each
disagreement when one does not."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from sqlalchemy import text

from kloyst.cli import main
from kloyst.db import utcnow
from kloyst_plugins.messages.models import MessageStatus

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "functional"))
from webhooks_support import Builder  # noqa: E402


def _event(db, message, status: str, wamid: str | None = None) -> None:
    db.execute(text("INSERT INTO message_status_event (vendor_id, message_id, wamid, status, occurred_at, "
                    "received_at) VALUES (:v, :m, :w, :s, :now, :now)"),
               {"v": message.vendor_id, "m": message.id, "w": wamid or message.wamid, "s": status, "now": utcnow()})
    db.commit()


def test_messages_that_agree_with_their_statuses_pass_with_a_summary(cli_ini, committed_db, registry, capsys):
    build = Builder(committed_db, registry)
    message = build.message(build.line())
    _event(committed_db, message, "SENT")
    _event(committed_db, build.message(build.line("Other Co"), wamid=None, status=MessageStatus.FAILED), "READ",
           wamid=f"wamid.{uuid.uuid4().hex}")  # Meta accepted a message Kloyst had given up on: kept, not applied
    assert main(["messages", "check", cli_ini]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: every message agrees with Meta's statuses")
    assert "2 status events" in out and "1 statuses of messages that had ended FAILED or CANCELLED" in out


def test_a_status_stored_but_never_applied_is_listed_and_fails(cli_ini, committed_db, registry, capsys):
    build = Builder(committed_db, registry)
    message = build.message(build.line())
    _event(committed_db, message, "DELIVERED")  # the message stayed SENT
    assert main(["messages", "check", cli_ini]) == 1
    err = capsys.readouterr().err
    assert f"lagging: message {message.id} (vendor {message.vendor_id}) is SENT but Meta reported it DELIVERED" in err
    assert "1 disagreement(s) between messages and Meta's statuses (lagging 1)" in err

