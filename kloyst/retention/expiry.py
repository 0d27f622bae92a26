"""How a retention policy finds its expired rows: in short batches that each resume where the last one stopped.

A prune that deletes a million rows must not hold a lock for long, must not slow the loops that
write the same tables (the relay claims outbox events while delivered ones are pruned), and must
do linear work. So every batch is its own short transaction of at most ``limit`` rows, selected
through an index in key order, locked with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL (a row a relay
or drainer holds right now is left for the next pass rather than waited for), and the next batch
starts after the last key of this one: a keyset, never ``OFFSET``, and never "the first ``limit``
expired rows" again, which would walk over the index entries of every row already deleted (they
stay in the index until VACUUM) and turn a pass quadratic.

Two shapes cover Kloyst's tables:

* :class:`BySequence` for tables keyed by a growing sequence whose rows are written in time order
  (``outbox_event``, ``webhook_delivery``, ``message_status_event``, ``vendor_event``): the first
  key that is not expired yet is found once per pass by walking the primary key from its start,
  and each batch takes keys below it.
* :class:`ByGroupAndTime` for tables keyed by UUIDs with an index that leads with a group column
  and the time (``message_log`` and ``inbound_message`` by vendor; each batch stays inside one
  group and moves on in ``(time, id)`` order).

Either gives back the rows of a batch, and the policy decides what happens to them (most are
deleted; media and import files clear a file and keep the row).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, Table, select, tuple_


@dataclass
class Cursor:
    """Where a pass stands: each batch reads it and moves it on. ``done`` ends the pass."""

    done: bool = False
    bound: Any = None  # BySequence: the first key that is not expired (None: every row is)
    bound_known: bool = False
    after: Any = None  # the last key handled
    group: Any = None  # ByGroupAndTime: the group in hand


def _locked(statement, connection: Connection):
    """``statement`` locking its rows, skipping those another transaction holds (PostgreSQL; SQLite locks the file)."""
    if connection.dialect.name == "postgresql":
        return statement.with_for_update(skip_locked=True)
    return statement


@dataclass(frozen=True)
class BySequence:
    """Expired rows of a table whose sequence key grows with ``age`` (written in time order).

    ``where`` narrows the rows that may go (``status = 'delivered'``), and ``also_older`` names times
    that must be past the cutoff too (``delivered_at``: an event created a month ago and delivered
    yesterday is kept its week); rows they keep are walked over once per pass, so they should keep
    few old rows. ``columns`` are read along with the key for the policy's action.
    """

    table: Table
    age: Column
    where: Sequence[ColumnElement] = ()
    also_older: Sequence[Column] = ()
    columns: Sequence[Column] = ()

    @property
    def key(self) -> Column:
        (key,) = self.table.primary_key.columns
        return key

    def batch(self, connection: Connection, cutoff: dt.datetime, limit: int, cursor: Cursor) -> Sequence:
        """Up to ``limit`` expired rows after the cursor (locked until the transaction ends); moves the cursor."""
        if not cursor.bound_known:
            cursor.bound = connection.execute(select(self.key).where(self.age >= cutoff)
                                              .order_by(self.key).limit(1)).scalar()
            cursor.bound_known = True
        conditions = [*self.where, self.age < cutoff, *(column < cutoff for column in self.also_older)]
        if cursor.bound is not None:
            conditions.append(self.key < cursor.bound)
        if cursor.after is not None:
            conditions.append(self.key > cursor.after)
        rows = connection.execute(_locked(select(self.key, *self.columns).where(*conditions)
                                          .order_by(self.key).limit(limit), connection)).all()
        if len(rows) < limit:
            cursor.done = True
        if rows:
            cursor.after = rows[-1][0]
        return rows


@dataclass(frozen=True)
class ByGroupAndTime:
    """Expired rows of a table with an index on ``(group, age, id)``, group by group.

    ``groups`` is the table whose primary key lists the groups (``vendor`` for ``vendor_id``): it is
    read one key at a time, so a platform with many vendors costs one index step per vendor.
    """

    table: Table
    group: Column
    age: Column
    groups: Table
    where: Sequence[ColumnElement] = ()
    columns: Sequence[Column] = ()

    @property
    def key(self) -> Column:
        (key,) = self.table.primary_key.columns
        return key

    def _next_group(self, connection: Connection, after) -> Any:
        (group_key,) = self.groups.primary_key.columns
        query = select(group_key).order_by(group_key).limit(1)
        if after is not None:
            query = query.where(group_key > after)
        return connection.execute(query).scalar()

    def batch(self, connection: Connection, cutoff: dt.datetime, limit: int, cursor: Cursor) -> Sequence:
        """Up to ``limit`` expired rows of one group after the cursor; moves on to the next group when it is done."""
        if cursor.group is None:
            cursor.group = self._next_group(connection, None)
            if cursor.group is None:
                cursor.done = True
                return []
        conditions = [self.group == cursor.group, self.age < cutoff, *self.where]
        if cursor.after is not None:
            conditions.append(tuple_(self.age, self.key) > tuple_(*cursor.after))
        rows = connection.execute(_locked(select(self.key, self.age, *self.columns).where(*conditions)
                                          .order_by(self.age, self.key).limit(limit), connection)).all()
        if len(rows) < limit:  # this group is done: the next one starts from its beginning
            cursor.group, cursor.after = self._next_group(connection, cursor.group), None
            cursor.done = cursor.group is None
        else:
            cursor.after = (rows[-1][1], rows[-1][0])
        return [(row[0], *row[2:]) for row in rows]
