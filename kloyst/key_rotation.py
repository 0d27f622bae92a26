"""Data-key rotation: every ciphertext the data keyring made, in every plugin's tables, moved to the active key.

Why it exists: ``kloyst.crypto.data_keys`` is a keyring whose first key encrypts and every key
decrypts (:class:`kloyst.crypto.FieldCipher`). An old key can only leave the ring once nothing
is encrypted with it any more, and the core cannot know what the plugins encrypted. So each
plugin declares its encrypted columns through the ``kloyst_encrypted_fields`` hook
(:class:`EncryptedFields`), and this module walks them all: ``kloyst keys rotate`` re-encrypts,
``kloyst keys status`` counts what each key still protects.

What the rotation guarantees:

* **Every vendor, on purpose.** It is an operator's maintenance pass, run platform-wide
  (``tenancy.ALL_VENDORS``); each value keeps its own associated data (its row's vendor and
  its field), so nothing can move between vendors or fields on the way.
* **Short transactions, nothing overwritten.** Rows go in batches, each batch one transaction
  that locks its rows (``FOR UPDATE``) before reading them: an edit made at the same time
  waits for the batch, or the batch waits for it and then reads the edited value, never the
  other way round.
* **No rescans.** Tables such as ``message_log`` hold millions of rows and have no index on
  the key-id column, so the walk is by primary key (``id > last ORDER BY id LIMIT batch``):
  each batch is a range of the primary-key index, and a run reads each row once. The batch
  is written back with one executemany ``UPDATE … WHERE id = ?``, not row by row in the ORM.
* **Failures stay put.** A row that cannot be decrypted (its key already removed from the
  ring, or its bytes tampered with) is counted, left exactly as it is, and the walk goes on.
* **Idempotent.** Only rows whose key-id column is not the active key id are touched, and
  each is left with it set: a second run finds nothing to do. A null column stays null; a
  row whose values are all under the active key already only gets its key id corrected.

Rows written behind the walk (a process still running with the old ring during a deploy)
are not missed for good: ``kloyst keys status`` shows them and another run rotates them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Table, bindparam, func, inspect, select, update

from kloyst.crypto import DecryptionError, FieldCipher
from kloyst.db import session_scope, tenancy

DEFAULT_BATCH = 1000
FAILED_IDS_KEPT = 10  # primary keys of undecryptable rows kept per table, for the operator to look at


@dataclass(frozen=True)
class EncryptedFields:
    """The columns of one table that hold :class:`~kloyst.crypto.FieldCipher` ciphertexts, as a plugin declares them.

    ``model`` is the mapped class (or its :class:`~sqlalchemy.Table`); ``columns`` maps each
    encrypted column to the field name its associated data was made with. ``vendor`` says
    whose vendor id is in the associated data: the name of a column of the row (the default,
    ``"vendor_id"``), or a constant id for rows that belong to no vendor (the platform's nil
    UUID for the shared WABA's token). ``kid_column`` names the column recording which key
    encrypted the row; ``primary_key`` the single-column primary key the walk is ordered by.
    """

    model: type | Table
    columns: Mapping[str, str]
    vendor: str | uuid.UUID = "vendor_id"
    kid_column: str = "enc_kid"
    primary_key: str = "id"

    def __post_init__(self) -> None:
        if not self.columns:
            raise ValueError(f"{self.name}: declare at least one encrypted column")
        named = [self.kid_column, self.primary_key, *self.columns]
        if isinstance(self.vendor, str):
            named.append(self.vendor)
        elif not isinstance(self.vendor, uuid.UUID):
            raise TypeError(f"{self.name}: vendor must be a column name or a uuid.UUID, not {self.vendor!r}")
        missing = [name for name in named if name not in self.table.c]
        if missing:
            raise ValueError(f"{self.name} has no column(s) {', '.join(missing)}")

    @property
    def table(self) -> Table:
        return self.model if isinstance(self.model, Table) else inspect(self.model).local_table

    @property
    def name(self) -> str:
        return self.table.name


@dataclass
class TableReport:
    """What one rotation did to one table."""

    table: str
    rotated: int = 0  # rows whose ciphertexts were re-encrypted with the active key
    relabelled: int = 0  # rows already under the active key whose key id only was corrected
    failed: int = 0  # rows that could not be decrypted, left as they were
    failed_ids: list = field(default_factory=list)  # the first FAILED_IDS_KEPT of them


def encrypted_tables(pm, names: Iterable[str] | None = None) -> list[EncryptedFields]:
    """What the installed plugins declared through ``kloyst_encrypted_fields``, in plugin load order.

    ``names`` keeps only those tables; naming a table no plugin declared raises ``KeyError``.
    """
    declared: dict[str, EncryptedFields] = {}
    owners: dict[str, str] = {}
    for plugin, item in pm.collect("kloyst_encrypted_fields"):
        if not isinstance(item, EncryptedFields):
            raise TypeError(f"plugin {plugin!r} returned {item!r} from kloyst_encrypted_fields, "
                            "not a kloyst.key_rotation.EncryptedFields")
        if item.name in declared:
            raise ValueError(f"table {item.name!r} is declared by both {owners[item.name]!r} and {plugin!r}")
        declared[item.name], owners[item.name] = item, plugin
    if names is None:
        return list(declared.values())
    wanted = list(dict.fromkeys(names))
    unknown = [name for name in wanted if name not in declared]
    if unknown:
        raise KeyError(", ".join(unknown))
    return [declared[name] for name in wanted]


def rotate_table(session_factory, cipher: FieldCipher, spec: EncryptedFields, *, batch: int = DEFAULT_BATCH,
                 progress: Callable[[TableReport], None] = lambda report: None) -> TableReport:
    """Re-encrypt every row of ``spec`` whose key id is not ``cipher.active_kid``; ``progress`` after each batch."""
    if batch < 1:
        raise ValueError("batch must be at least 1")
    table = spec.table
    pk, kid = table.c[spec.primary_key], table.c[spec.kid_column]
    vendor_column = table.c[spec.vendor] if isinstance(spec.vendor, str) else None
    stale = kid != cipher.active_kid
    # Two reads per batch: the next ids, then those rows locked. With one ``LIMIT … FOR UPDATE``
    # a batch whose rows were all rotated meanwhile by someone else would come back empty and
    # look like the end of the table; here only an empty range of ids ends the walk.
    next_ids = select(pk).where(stale).order_by(pk).limit(batch)
    lock = (select(pk, *([vendor_column] if vendor_column is not None else []),
                   *(table.c[name] for name in spec.columns))
            .where(stale).order_by(pk).with_for_update())
    # Bound names differ from the column names: SQLAlchemy reserves those for the SET clause.
    write = (update(table).where(pk == bindparam("row_pk"))
             .values({kid.name: cipher.active_kid, **{name: bindparam(f"new_{name}") for name in spec.columns}}))
    report = TableReport(spec.name)
    last = None
    while True:
        with session_scope(session_factory, vendor_id=tenancy.ALL_VENDORS) as db:
            ids = db.scalars(next_ids if last is None else next_ids.where(pk > last)).all()
            rows = db.execute(lock.where(pk.in_(ids))).mappings().all() if ids else []
            changes = []
            for row in rows:
                vendor_id = row[spec.vendor] if isinstance(spec.vendor, str) else spec.vendor
                try:
                    values, rotated = _reencrypted(cipher, spec, vendor_id, row)
                except DecryptionError:
                    report.failed += 1
                    if len(report.failed_ids) < FAILED_IDS_KEPT:
                        report.failed_ids.append(row[pk.name])
                    continue
                changes.append({"row_pk": row[pk.name], **values})
                if rotated:
                    report.rotated += 1
                else:
                    report.relabelled += 1
            if changes:
                db.execute(write, changes)
        if not ids:
            return report
        last = ids[-1]
        progress(report)


def _reencrypted(cipher: FieldCipher, spec: EncryptedFields, vendor_id: uuid.UUID, row) -> tuple[dict, bool]:
    """``({"new_<column>": value}, whether any value was re-encrypted)``; raises DecryptionError for the whole row."""
    values, rotated = {}, False
    for column, aad_field in spec.columns.items():
        token = row[column]
        if token is not None and cipher.needs_rotation(token):
            plain = cipher.decrypt(token, vendor_id=vendor_id, field=aad_field)
            token, rotated = cipher.encrypt(plain, vendor_id=vendor_id, field=aad_field), True
        values[f"new_{column}"] = token
    return values, rotated


def key_usage(session_factory, specs: Iterable[EncryptedFields]) -> dict[str, dict[str, int]]:
    """``{table: {key id: rows}}`` by the key-id column, for every table in ``specs``.

    Each table is counted with one ``GROUP BY`` (a full scan on a table without an index on
    its key-id column): an operator's question, asked a few times per rotation.
    """
    usage: dict[str, dict[str, int]] = {}
    with session_scope(session_factory, vendor_id=tenancy.ALL_VENDORS) as db:
        for spec in specs:
            kid = spec.table.c[spec.kid_column]
            counts = db.execute(select(kid, func.count()).group_by(kid).order_by(kid)).all()
            usage[spec.name] = {key_id: count for key_id, count in counts}
    return usage
