"""``kloyst keys rotate`` and ``kloyst keys status``: every table the plugins encrypt moves to the active data key.

The rows are made the way the plugins make them (their own sealing functions) under an old
key, rotated, and read back the way the plugins read them, with the new key alone.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
import threading
import time
import uuid

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from kloyst.accounts.models import Vendor
from kloyst.cli import main
from kloyst.crypto import FieldCipher, MobileHasher
from kloyst.key_rotation import EncryptedFields, encrypted_tables, key_usage, rotate_table
from kloyst_plugins.contacts.models import Contact
from kloyst_plugins.messages.content import open_content, seal_content
from kloyst_plugins.messages.models import InboundMessage, MessageLog
from kloyst_plugins.messages.webhooks import INBOUND_FIELD
from kloyst_plugins.waba import access
from kloyst_plugins.waba.models import PhoneNumber, SharedWaba, Waba

OLD, NEW, LOST = os.urandom(32), os.urandom(32), os.urandom(32)
ENCRYPTED_TABLES = {"contact", "message_log", "inbound_message", "waba", "shared_waba"}
ENV_OVERRIDES = ("DATABASE_URL", "DATA_ENCRYPTION_KEYS", "DATA_HASH_KEY", "REDIS_URL", "SERVICE_TYPE")


def _b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def _meta_id() -> str:
    return str(10**14 + uuid.uuid4().int % 10**14)


ROTATING = FieldCipher({"new": NEW, "old": OLD})
NEW_ONLY = FieldCipher({"new": NEW})
RING = f"new:{_b64(NEW)},old:{_b64(OLD)}"


class Seeder:
    """Rows of every encrypted table, sealed with a given cipher by the plugins' own functions."""

    def __init__(self, db, registry) -> None:
        self.db = db
        self.hasher = MobileHasher(registry.settings["kloyst.crypto.hash_key"])

    def _save(self, *rows):
        self.db.add_all(rows)
        self.db.commit()
        return rows[0] if len(rows) == 1 else rows

    def vendor(self, cipher: FieldCipher, name: str = "Rotating Co") -> PhoneNumber:
        """A vendor with its own WABA (token sealed with ``cipher``) and one number."""
        vendor = self._save(Vendor(name=name))
        token_enc, kid = access.encrypt_waba_token(cipher, vendor.id, f"token of {name}")
        waba = self._save(Waba(vendor_id=vendor.id, meta_waba_id=_meta_id(), access_token_enc=token_enc,
                               enc_kid=kid))
        return self._save(PhoneNumber(vendor_id=vendor.id, waba_id=waba.id, meta_phone_number_id=_meta_id(),
                                      display_phone_number="+1 555 010 0000"))

    def contact(self, cipher: FieldCipher, vendor_id: uuid.UUID, e164: str, name: str | None = None) -> Contact:
        return self._save(Contact(
            vendor_id=vendor_id, mobile_hash=self.hasher(vendor_id, e164),
            mobile_enc=cipher.encrypt(e164, vendor_id=vendor_id, field="mobile"),
            name_enc=cipher.encrypt(name, vendor_id=vendor_id, field="name") if name else None,
            enc_kid=cipher.active_kid))

    def message(self, cipher: FieldCipher, number: PhoneNumber, to: str = "+12025550123") -> MessageLog:
        payload = {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": f"hello {to}"}}
        content_enc, kid = seal_content(cipher, number.vendor_id, payload)
        return self._save(MessageLog(vendor_id=number.vendor_id, phone_number_id=number.id,
                                     recipient_hash=self.hasher(number.vendor_id, to), content_enc=content_enc,
                                     enc_kid=kid))

    def inbound(self, cipher: FieldCipher, number: PhoneNumber, body: str = "is my order shipped?") -> InboundMessage:
        return self._save(InboundMessage(
            vendor_id=number.vendor_id, wamid=f"wamid.{uuid.uuid4().hex}", phone_number_id=number.id,
            sender_hash=self.hasher(number.vendor_id, "+12025550199"), type="text",
            content_enc=cipher.encrypt(f'{{"text":{{"body":"{body}"}}}}', vendor_id=number.vendor_id,
                                       field=INBOUND_FIELD),
            enc_kid=cipher.active_kid, sent_at=dt.datetime.now(dt.timezone.utc)))

    def shared_waba(self, cipher: FieldCipher) -> SharedWaba:
        token_enc, kid = access.encrypt_shared_token(cipher, "token of the platform")
        return self._save(SharedWaba(meta_waba_id=_meta_id(), access_token_enc=token_enc, enc_kid=kid))

    def everything(self, cipher: FieldCipher) -> None:
        """Two vendors with a contact with a name and one without, a message and an inbound message; a shared WABA."""
        for letter in "AB":
            number = self.vendor(cipher, f"Rotating {letter}")
            self.contact(cipher, number.vendor_id, "+447400100601", name=f"Ann {letter}")
            self.contact(cipher, number.vendor_id, "+447400100602")
            self.message(cipher, number)
            self.inbound(cipher, number)
        self.shared_waba(cipher)


def readable(db, cipher: FieldCipher) -> dict[tuple[str, uuid.UUID], object]:
    """Every encrypted value as its plugin reads it, keyed by (table, id); fails if any does not decrypt."""
    db.expire_all()
    values: dict[tuple[str, uuid.UUID], object] = {}
    for c in db.scalars(select(Contact)):
        values["contact", c.id] = (cipher.decrypt(c.mobile_enc, vendor_id=c.vendor_id, field="mobile"),
                                   c.name_enc and cipher.decrypt(c.name_enc, vendor_id=c.vendor_id, field="name"))
    for m in db.scalars(select(MessageLog)):
        values["message_log", m.id] = open_content(cipher, m.vendor_id, m.content_enc)
    for i in db.scalars(select(InboundMessage)):
        values["inbound_message", i.id] = cipher.decrypt(i.content_enc, vendor_id=i.vendor_id, field=INBOUND_FIELD)
    for w in db.scalars(select(Waba)):
        values["waba", w.id] = access.waba_token(cipher, w)
    for s in db.scalars(select(SharedWaba)):
        values["shared_waba", s.id] = access.shared_token(cipher, s)
    return values


def ciphertexts(db) -> dict[tuple[str, uuid.UUID], tuple]:
    """``(enc_kid, *encrypted columns)`` of every row, as stored."""
    db.expire_all()
    rows = {("contact", c.id): (c.enc_kid, c.mobile_enc, c.name_enc) for c in db.scalars(select(Contact))}
    for model in (MessageLog, InboundMessage):
        rows |= {(model.__tablename__, r.id): (r.enc_kid, r.content_enc) for r in db.scalars(select(model))}
    for model in (Waba, SharedWaba):
        rows |= {(model.__tablename__, r.id): (r.enc_kid, r.access_token_enc) for r in db.scalars(select(model))}
    return rows


def rotate_all(registry, cipher: FieldCipher, **kwargs) -> dict[str, object]:
    return {spec.name: rotate_table(registry["kloyst.session_factory"], cipher, spec, **kwargs)
            for spec in encrypted_tables(registry["kloyst.plugin_manager"])}


def usage(registry) -> dict[str, dict[str, int]]:
    return key_usage(registry["kloyst.session_factory"], encrypted_tables(registry["kloyst.plugin_manager"]))


@pytest.fixture
def seed(db, registry) -> Seeder:
    return Seeder(db, registry)


def test_the_first_party_plugins_declare_every_table_they_encrypt(registry):
    declared = {spec.name: spec for spec in encrypted_tables(registry["kloyst.plugin_manager"])}
    assert set(declared) >= ENCRYPTED_TABLES
    assert declared["contact"].columns == {"mobile_enc": "mobile", "name_enc": "name", "bsuid_enc": "bsuid",
                                           "parent_bsuid_enc": "parent_bsuid", "username_enc": "username"}
    assert declared["shared_waba"].vendor == access.PLATFORM
    assert declared["message_log"].vendor == "vendor_id"


def test_a_declaration_naming_a_column_the_table_lacks_is_refused_at_once():
    with pytest.raises(ValueError, match="contact has no column"):
        EncryptedFields(Contact, {"mobile_enc": "mobile", "phone_enc": "phone"})
    with pytest.raises(TypeError, match="vendor must be"):
        EncryptedFields(SharedWaba, {"access_token_enc": access.SHARED_TOKEN_FIELD}, vendor=0)


def test_rotation_reencrypts_every_table_so_the_new_key_alone_reads_the_same_values(seed, db, registry):
    seed.everything(FieldCipher({"old": OLD}))
    before, stored = readable(db, FieldCipher({"old": OLD})), ciphertexts(db)
    assert {key[0] for key in before} == ENCRYPTED_TABLES

    reports = rotate_all(registry, ROTATING)

    assert {name: (r.rotated, r.failed) for name, r in reports.items() if name in ENCRYPTED_TABLES} == {
        "contact": (4, 0), "message_log": (2, 0), "inbound_message": (2, 0), "waba": (2, 0), "shared_waba": (1, 0)}
    assert readable(db, NEW_ONLY) == before
    after = ciphertexts(db)
    assert {row[0] for row in after.values()} == {"new"}
    for key, (_, *columns) in after.items():
        assert all(new != old for new, old in zip(columns, stored[key][1:]) if old is not None), key


def test_a_null_name_stays_null(seed, db, registry):
    number = seed.vendor(FieldCipher({"old": OLD}))
    nameless = seed.contact(FieldCipher({"old": OLD}), number.vendor_id, "+447400100603")
    rotate_all(registry, ROTATING)
    db.expire_all()
    assert (nameless.enc_kid, nameless.name_enc) == ("new", None)


def test_a_second_rotation_changes_nothing(seed, db, registry):
    seed.everything(FieldCipher({"old": OLD}))
    rotate_all(registry, ROTATING)
    rotated = ciphertexts(db)
    again = rotate_all(registry, ROTATING)
    assert {(r.rotated, r.relabelled, r.failed) for r in again.values()} == {(0, 0, 0)}
    assert ciphertexts(db) == rotated


def test_a_row_already_under_the_active_key_only_gets_its_key_id_corrected(seed, db, registry):
    number = seed.vendor(FieldCipher({"new": NEW}))
    contact = seed.contact(FieldCipher({"new": NEW}), number.vendor_id, "+447400100604", name="Ann")
    contact.enc_kid = "old"
    db.commit()
    before = (contact.mobile_enc, contact.name_enc)
    report = rotate_table(registry["kloyst.session_factory"], ROTATING, encrypted_tables(
        registry["kloyst.plugin_manager"], ["contact"])[0])
    assert (report.rotated, report.relabelled, report.failed) == (0, 1, 0)
    db.expire_all()
    assert (contact.enc_kid, contact.mobile_enc, contact.name_enc) == ("new", *before)


def test_an_undecryptable_row_is_counted_and_left_as_it_is_while_the_others_rotate(seed, db, registry):
    seed.everything(FieldCipher({"old": OLD}))
    number = seed.vendor(FieldCipher({"old": OLD}), "Key lost Co")
    lost = seed.contact(FieldCipher({"lost": LOST}), number.vendor_id, "+447400100605", name="Gone")
    tampered = seed.message(FieldCipher({"old": OLD}), number)
    tampered.content_enc = tampered.content_enc[:-1] + bytes([tampered.content_enc[-1] ^ 1])
    db.commit()
    broken = {("contact", lost.id), ("message_log", tampered.id)}
    stored = ciphertexts(db)

    reports = rotate_all(registry, ROTATING)

    assert (reports["contact"].failed, reports["contact"].failed_ids) == (1, [lost.id])
    assert (reports["message_log"].failed, reports["message_log"].failed_ids) == (1, [tampered.id])
    assert (reports["contact"].rotated, reports["message_log"].rotated) == (4, 2)
    after = ciphertexts(db)
    assert {key: after[key] for key in broken} == {key: stored[key] for key in broken}
    assert {row[0] for key, row in after.items() if key not in broken} == {"new"}


def test_batches_walk_past_each_other_by_primary_key(seed, db, registry):
    number = seed.vendor(FieldCipher({"old": OLD}))
    for i in range(5):
        seed.message(FieldCipher({"old": OLD}), number, to=f"+1202555012{i}")
    seen = []
    spec = encrypted_tables(registry["kloyst.plugin_manager"], ["message_log"])[0]
    report = rotate_table(registry["kloyst.session_factory"], ROTATING, spec, batch=2,
                          progress=lambda r: seen.append(r.rotated))
    assert seen == [2, 4, 5]
    assert report.rotated == 5
    assert usage(registry)["message_log"] == {"new": 5}


def test_undecryptable_rows_filling_a_batch_do_not_stop_or_stall_the_walk(seed, db, registry):
    number = seed.vendor(FieldCipher({"old": OLD}))
    messages = sorted((seed.message(FieldCipher({"old": OLD}), number, to=f"+1202555013{i}") for i in range(5)),
                      key=lambda m: m.id)
    for message in messages[:2]:  # the whole first batch
        message.content_enc = message.content_enc[:-1] + bytes([message.content_enc[-1] ^ 1])
    db.commit()
    seen = []

    def progress(report):
        seen.append((report.rotated, report.failed))
        assert len(seen) < 10, "the walk went back over rows it had passed"

    spec = encrypted_tables(registry["kloyst.plugin_manager"], ["message_log"])[0]
    report = rotate_table(registry["kloyst.session_factory"], ROTATING, spec, batch=2, progress=progress)
    assert seen == [(0, 2), (2, 2), (3, 2)]
    assert report.failed_ids == [m.id for m in messages[:2]]


def test_status_counts_rows_per_table_and_key_before_and_after(seed, registry):
    seed.everything(FieldCipher({"old": OLD}))
    seed.vendor(FieldCipher({"new": NEW}), "Fresh Co")
    before = usage(registry)
    assert {name: before[name] for name in ENCRYPTED_TABLES} == {
        "contact": {"old": 4}, "message_log": {"old": 2}, "inbound_message": {"old": 2},
        "waba": {"new": 1, "old": 2}, "shared_waba": {"old": 1}}
    rotate_all(registry, ROTATING)
    after = usage(registry)
    assert {name: after[name] for name in ENCRYPTED_TABLES} == {
        "contact": {"new": 4}, "message_log": {"new": 2}, "inbound_message": {"new": 2},
        "waba": {"new": 3}, "shared_waba": {"new": 1}}


def test_an_edit_made_during_the_rotation_is_never_overwritten(registry, committed_db):
    """The batch locks its rows: it waits for the edit, then sees the edited row needs nothing."""
    seed = Seeder(committed_db, registry)
    number = seed.vendor(FieldCipher({"old": OLD}))
    contact = seed.contact(FieldCipher({"old": OLD}), number.vendor_id, "+447400100606", name="Before")
    edited = ROTATING.encrypt("After", vendor_id=number.vendor_id, field="name")
    spec = encrypted_tables(registry["kloyst.plugin_manager"], ["contact"])[0]
    engine = registry["kloyst.engine"]
    with engine.connect() as editor:
        editor.execute(sa.update(Contact.__table__).where(Contact.__table__.c.id == contact.id)
                       .values(name_enc=edited, enc_kid="new"))  # not committed yet: holds the row lock
        rotation = threading.Thread(target=rotate_table,
                                    args=(registry["kloyst.session_factory"], ROTATING, spec))
        rotation.start()
        _wait_for_a_lock_wait(engine)
        editor.commit()
    rotation.join(timeout=30)
    assert not rotation.is_alive()
    committed_db.expire_all()
    assert NEW_ONLY.decrypt(committed_db.get(Contact, contact.id).name_enc, vendor_id=number.vendor_id,
                            field="name") == "After"


def _wait_for_a_lock_wait(engine, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    with engine.connect() as probe:
        while time.monotonic() < deadline:
            waiting = probe.execute(sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                            "AND datname = current_database()")).scalar()
            probe.rollback()
            if waiting:
                return
            time.sleep(0.02)
    pytest.fail("the rotation never waited for the edited row")


@pytest.fixture
def write_ini(tmp_path, kloyst_settings, monkeypatch):
    for name in ENV_OVERRIDES:
        monkeypatch.delenv(name, raising=False)

    def write(data_keys: str) -> str:
        settings = {**kloyst_settings, "kloyst.crypto.data_keys": data_keys}
        ini = tmp_path / "rotate.ini"
        ini.write_text("[app:main]\nuse = egg:kloyst\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        return str(ini)

    return write


def test_the_command_rotates_every_table_and_status_says_when_the_old_key_may_go(registry, committed_db, write_ini,
                                                                                  capsys):
    Seeder(committed_db, registry).everything(FieldCipher({"old": OLD}))
    before = readable(committed_db, FieldCipher({"old": OLD}))
    ini = write_ini(RING)

    assert main(["keys", "status", ini]) == 1
    out = capsys.readouterr().out
    assert "  message_log: old 2" in out and "  shared_waba: old 1" in out
    assert "11 row(s) still use keys other than 'new' (old: 11)" in out

    assert main(["keys", "rotate", ini, "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert "re-encrypting contact, " in out and "with data key 'new'" in out
    assert "  contact: 3 re-encrypted, 0 failed so far" in out and "  contact: 4 re-encrypted, 0 failed so far" in out
    for line in ("contact: 4 re-encrypted", "message_log: 2 re-encrypted", "inbound_message: 2 re-encrypted",
                 "waba: 2 re-encrypted", "shared_waba: 1 re-encrypted"):
        assert f"  {line}, 0 key id corrected, 0 failed" in out
    assert readable(committed_db, NEW_ONLY) == before

    assert main(["keys", "status", ini]) == 0
    out = capsys.readouterr().out
    assert "  message_log: new 2" in out
    assert [line for line in out.splitlines() if line.startswith("  ") and ": old " in line] == []
    assert "every row uses the active key 'new': old may be removed from the keyring" in out

    assert main(["keys", "rotate", ini]) == 0
    assert "  contact: 0 re-encrypted, 0 key id corrected, 0 failed" in capsys.readouterr().out


def test_the_command_exits_1_naming_the_rows_it_could_not_decrypt(registry, committed_db, write_ini, capsys):
    seed = Seeder(committed_db, registry)
    number = seed.vendor(FieldCipher({"old": OLD}))
    lost = seed.contact(FieldCipher({"lost": LOST}), number.vendor_id, "+447400100607")
    seed.contact(FieldCipher({"old": OLD}), number.vendor_id, "+447400100608")
    ini = write_ini(RING)

    assert main(["keys", "rotate", ini, "--table", "contact"]) == 1
    captured = capsys.readouterr()
    assert "re-encrypting contact with data key 'new'" in captured.out
    assert "  contact: 1 re-encrypted, 0 key id corrected, 1 failed" in captured.out
    assert f"contact: 1 row(s) could not be decrypted with any key in kloyst.crypto.data_keys and keep their old " \
           f"ciphertext (first ids: {lost.id})" in captured.err

    assert main(["keys", "status", ini, "--table", "contact"]) == 1
    out = capsys.readouterr().out
    assert "  contact: lost 1  (not in the keyring: these rows cannot be decrypted)" in out
    assert "  contact: new 1" in out
    assert "waba" not in out


def test_the_command_refuses_a_table_no_plugin_encrypts_and_a_batch_below_one(write_ini, capsys):
    ini = write_ini(RING)
    assert main(["keys", "rotate", ini, "--table", "vendor"]) == 2
    assert "no installed plugin encrypts the table(s) vendor; encrypted tables: contact" in capsys.readouterr().err
    assert main(["keys", "status", ini, "--table", "nope"]) == 2
    assert main(["keys", "rotate", ini, "--batch", "0"]) == 2
    assert "--batch must be at least 1" in capsys.readouterr().err
