"""``kloyst keys rotate <ini>``: re-encrypt contact numbers and names with the active data key.

Rotation is: put the new key first in ``kloyst.crypto.data_keys`` (keeping the old one after
it), deploy, run this command, then remove the old key. The command finds the rows to
re-encrypt by ``enc_kid`` (indexed), across all vendors, in batches of ``--batch`` rows,
each batch one short transaction with its rows locked (``FOR UPDATE``), so an edit made
at the same time is never overwritten with the old value (one waits for the other). It is
idempotent: a second run finds nothing to do. Rows that
cannot be decrypted (their key already removed, or tampered) are reported and left as they
are, and the command then exits 1.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import select

from kloyst.crypto import DecryptionError, FieldCipher

DEFAULT_BATCH = 1000


@dataclass
class RotationReport:
    rotated: int = 0
    failed: int = 0


def _reencrypt(contact, cipher: FieldCipher) -> None:
    for field, column in (("mobile", "mobile_enc"), ("name", "name_enc")):
        token = getattr(contact, column)
        if token is not None and cipher.needs_rotation(token):
            plain = cipher.decrypt(token, vendor_id=contact.vendor_id, field=field)
            setattr(contact, column, cipher.encrypt(plain, vendor_id=contact.vendor_id, field=field))
    contact.enc_kid = cipher.active_kid


def rotate(session_factory, cipher: FieldCipher, *, batch: int = DEFAULT_BATCH,
           progress: Callable[[RotationReport], None] = lambda report: None) -> RotationReport:
    """Re-encrypt every contact not under ``cipher.active_kid``; returns how many were rotated and failed."""
    from kloyst.db import session_scope, tenancy
    from kloyst_plugins.contacts.models import Contact

    report = RotationReport()
    failed_ids: set = set()
    while True:
        # Platform-wide on purpose: an operator's maintenance pass over every vendor's rows.
        with session_scope(session_factory, vendor_id=tenancy.ALL_VENDORS) as db:
            query = select(Contact).where(Contact.enc_kid != cipher.active_kid)
            if failed_ids:
                query = query.where(Contact.id.not_in(failed_ids))
            contacts = list(db.scalars(query.order_by(Contact.id).limit(batch).with_for_update()))
            for contact in contacts:
                try:
                    _reencrypt(contact, cipher)
                    report.rotated += 1
                except DecryptionError:
                    db.expire(contact)
                    failed_ids.add(contact.id)
                    report.failed += 1
        if not contacts:
            return report
        progress(report)


def cmd_rotate(args) -> int:
    from kloyst.cli.bootstrap import load

    if args.batch < 1:
        print("--batch must be at least 1", file=sys.stderr)
        return 2
    _, registry = load(args.ini)
    cipher = registry["kloyst.cipher"]
    print(f"re-encrypting contacts with data key {cipher.active_kid!r}")

    def progress(report: RotationReport) -> None:
        print(f"  {report.rotated} re-encrypted, {report.failed} failed so far", flush=True)

    report = rotate(registry["kloyst.session_factory"], cipher, batch=args.batch, progress=progress)
    print(f"done: {report.rotated} contact(s) re-encrypted with {cipher.active_kid!r}, {report.failed} failed")
    if report.failed:
        print(f"{report.failed} contact(s) could not be decrypted with any key in kloyst.crypto.data_keys; "
              "they keep their old ciphertext", file=sys.stderr)
        return 1
    return 0


def add_commands(subparsers) -> None:
    keys = subparsers.add_parser("keys", help="data encryption keys")
    actions = keys.add_subparsers(dest="keys_action", metavar="ACTION")
    actions.required = True
    rotate_parser = actions.add_parser("rotate", help="re-encrypt contact numbers and names with the active key")
    rotate_parser.add_argument("ini", help="the ini file, e.g. development.ini")
    rotate_parser.add_argument("--batch", type=int, default=DEFAULT_BATCH, help="rows per transaction")
    rotate_parser.set_defaults(handler=cmd_rotate)
