"""``kloyst keys rotate``: every contact re-encrypted under the active key, in batches, idempotently."""

import base64
import os

import pytest
from sqlalchemy import select

from kloyst.accounts.models import Vendor
from kloyst.cli import main
from kloyst.crypto import FieldCipher, MobileHasher
from kloyst.db import session_scope
from kloyst_plugins.contacts.models import Contact, ContactSource
from kloyst_plugins.contacts.phones import normalize
from kloyst_plugins.contacts.services import Actor, ContactService

OLD, NEW, LOST = os.urandom(32), os.urandom(32), os.urandom(32)
ENV_OVERRIDES = ("DATABASE_URL", "DATA_ENCRYPTION_KEYS", "DATA_HASH_KEY", "REDIS_URL", "SERVICE_TYPE")


def _b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


@pytest.fixture
def write_ini(tmp_path, kloyst_settings, monkeypatch):
    for name in ENV_OVERRIDES:
        monkeypatch.delenv(name, raising=False)

    def write(data_keys: str):
        settings = {**kloyst_settings, "kloyst.crypto.data_keys": data_keys}
        ini = tmp_path / "rotate.ini"
        ini.write_text("[app:main]\nuse = egg:kloyst\n" + "".join(f"{k} = {v}\n" for k, v in settings.items()))
        return str(ini)

    return write


def _populate(registry, committed_db, cipher, count):
    vendors = [Vendor(name="Rot A"), Vendor(name="Rot B")]
    committed_db.add_all(vendors)
    committed_db.commit()
    hasher = MobileHasher(registry.settings["kloyst.crypto.hash_key"])
    for vendor in vendors:
        with session_scope(registry["kloyst.session_factory"], vendor_id=vendor.id) as db:
            service = ContactService(db, vendor_id=vendor.id, cipher=cipher, hasher=hasher)
            for i in range(count):
                name = None if i % 3 == 0 else f"Name {i}"
                service.create(normalize(f"+4474001006{i:02d}"), actor=Actor(ContactSource.API), name=name)
    return vendors


def _all_contacts(committed_db):
    committed_db.expire_all()
    return list(committed_db.scalars(select(Contact).order_by(Contact.id)))


def test_rotate_reencrypts_every_contact_so_the_new_key_alone_decrypts(registry, committed_db, write_ini, capsys):
    _populate(registry, committed_db, FieldCipher({"old": OLD}), count=5)
    before = {c.id: (c.mobile_enc, c.name_enc) for c in _all_contacts(committed_db)}
    assert {c.enc_kid for c in _all_contacts(committed_db)} == {"old"}
    old_cipher = FieldCipher({"old": OLD})
    plain = {c.id: (old_cipher.decrypt(c.mobile_enc, vendor_id=c.vendor_id, field="mobile"),
                    c.name_enc and old_cipher.decrypt(c.name_enc, vendor_id=c.vendor_id, field="name"))
             for c in _all_contacts(committed_db)}

    assert main(["keys", "rotate", write_ini(f"new:{_b64(NEW)},old:{_b64(OLD)}"), "--batch", "3"]) == 0
    out = capsys.readouterr().out
    assert "done: 10 contact(s) re-encrypted with 'new', 0 failed" in out
    assert out.count("re-encrypted, 0 failed so far") == 4  # batches of 3: 3, 6, 9, 10

    new_only = FieldCipher({"new": NEW})
    contacts = _all_contacts(committed_db)
    assert {c.enc_kid for c in contacts} == {"new"}
    for contact in contacts:
        assert contact.mobile_enc != before[contact.id][0]
        mobile = new_only.decrypt(contact.mobile_enc, vendor_id=contact.vendor_id, field="mobile")
        name = contact.name_enc and new_only.decrypt(contact.name_enc, vendor_id=contact.vendor_id, field="name")
        assert (mobile, name) == plain[contact.id]

    assert main(["keys", "rotate", write_ini(f"new:{_b64(NEW)},old:{_b64(OLD)}")]) == 0
    assert "done: 0 contact(s) re-encrypted" in capsys.readouterr().out
    assert [(c.mobile_enc, c.name_enc) for c in _all_contacts(committed_db)] == \
        [(c.mobile_enc, c.name_enc) for c in contacts]


def test_rows_whose_key_is_gone_are_reported_and_left_alone(registry, committed_db, write_ini, capsys):
    _populate(registry, committed_db, FieldCipher({"lost": LOST}), count=1)
    _populate(registry, committed_db, FieldCipher({"old": OLD}), count=1)
    assert main(["keys", "rotate", write_ini(f"new:{_b64(NEW)},old:{_b64(OLD)}")]) == 1
    captured = capsys.readouterr()
    assert "done: 2 contact(s) re-encrypted with 'new', 2 failed" in captured.out
    assert "could not be decrypted" in captured.err
    assert sorted(c.enc_kid for c in _all_contacts(committed_db)) == ["lost", "lost", "new", "new"]


def test_batch_must_be_positive(write_ini, capsys):
    assert main(["keys", "rotate", write_ini(f"new:{_b64(NEW)}"), "--batch", "0"]) == 2
