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

import abc
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, Table, func, select, tuple_
from sqlalchemy import delete as sa_delete


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


class _Finder(abc.ABC):
    """What both finders share: a batch is a selection (:meth:`_selection`, ordered by :meth:`_order`) whose
    last row moves the cursor (:meth:`_advance`); the rows can be fetched (:meth:`batch`) or deleted where
    they are (:meth:`delete`)."""

    table: Table
    columns: Sequence[Column]

    @property
    def key(self) -> Column:
        (key,) = self.table.primary_key.columns
        return key

    def batch(self, connection: Connection, cutoff: dt.datetime, limit: int, cursor: Cursor) -> Sequence:
        """Up to ``limit`` expired rows after the cursor (locked until the transaction ends); moves the cursor.

        Each row is the key, then ``columns``."""
        selection = self._selection(connection, cutoff, limit, cursor)
        if selection is None:
            return []
        order = self._order()
        rows = connection.execute(_locked(select(*order, *self.columns).where(*selection)
                                          .order_by(*order).limit(limit), connection)).all()
        self._advance(connection, cursor, len(rows), tuple(rows[-1][:len(order)]) if rows else None, limit)
        return [(row[len(order) - 1], *row[len(order):]) for row in rows]

    def delete(self, connection: Connection, cutoff: dt.datetime, limit: int, cursor: Cursor) -> int:
        """Delete up to ``limit`` expired rows after the cursor; how many. Moves the cursor.

        On PostgreSQL one statement selects, locks and deletes them and answers one row (how many, and
        the last one's key): a batch costs the process that prunes (an OUTBOX process, beside its relay)
        almost nothing. Elsewhere the rows are fetched, then deleted by key.
        """
        if connection.dialect.name != "postgresql":
            rows = self.batch(connection, cutoff, limit, cursor)
            if rows:
                connection.execute(sa_delete(self.table).where(self.key.in_([row[0] for row in rows])))
            return len(rows)
        selection = self._selection(connection, cutoff, limit, cursor)
        if selection is None:
            return 0
        order = self._order()
        doomed = select(self.key).where(*selection).order_by(*order).limit(limit).with_for_update(
            skip_locked=True).cte("doomed")
        gone = (sa_delete(self.table).where(self.key.in_(select(doomed.c[self.key.name])))
                .returning(*order).cte("gone"))
        last = connection.execute(select(func.count().over(), *(gone.c[c.name] for c in order))
                                  .order_by(*(gone.c[c.name].desc() for c in order)).limit(1)).first()
        count = last[0] if last is not None else 0
        self._advance(connection, cursor, count, tuple(last[1:]) if last is not None else None, limit)
        return count

    @abc.abstractmethod
    def _order(self) -> tuple[Column, ...]:
        """The columns a batch is ordered by, the key last: a batch's last row is where the next one starts."""

    @abc.abstractmethod
    def _selection(self, connection: Connection, cutoff: dt.datetime, limit: int, cursor: Cursor) -> list | None:
        """The conditions of the next batch's rows (None: there is nothing left to look at)."""

    @abc.abstractmethod
    def _advance(self, connection: Connection, cursor: Cursor, count: int, last: tuple | None, limit: int) -> None:
        """Move the cursor past a batch of ``count`` rows whose last one had the order columns ``last``."""


@dataclass(frozen=True)
class BySequence(_Finder):
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

    def _order(self) -> tuple[Column, ...]:
        return (self.key,)

    def _selection(self, connection: Connection, cutoff: dt.datetime, limit: int, cursor: Cursor) -> list | None:
        if not cursor.bound_known:  # the first key that has not expired: the pass stops there
            cursor.bound = connection.execute(select(self.key).where(self.age >= cutoff)
                                              .order_by(self.key).limit(1)).scalar()
            cursor.bound_known = True
        conditions = [*self.where, self.age < cutoff, *(column < cutoff for column in self.also_older)]
        if cursor.bound is not None:
            conditions.append(self.key < cursor.bound)
        if cursor.after is not None:
            conditions.append(self.key > cursor.after)
        return conditions

    def _advance(self, connection: Connection, cursor: Cursor, count: int, last: tuple | None, limit: int) -> None:
        if count < limit:
            cursor.done = True
        if last is not None:
            cursor.after = last[0]


@dataclass(frozen=True)
class ByGroupAndTime(_Finder):
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

    def _order(self) -> tuple[Column, ...]:
        return (self.age, self.key)

    def _next_group(self, connection: Connection, after) -> Any:
        (group_key,) = self.groups.primary_key.columns
        query = select(group_key).order_by(group_key).limit(1)
        if after is not None:
            query = query.where(group_key > after)
        return connection.execute(query).scalar()

    def _selection(self, connection: Connection, cutoff: dt.datetime, limit: int, cursor: Cursor) -> list | None:
        if cursor.group is None:
            cursor.group = self._next_group(connection, None)
            if cursor.group is None:
                cursor.done = True
                return None
        conditions = [self.group == cursor.group, self.age < cutoff, *self.where]
        if cursor.after is not None:
            conditions.append(tuple_(self.age, self.key) > tuple_(*cursor.after))
        return conditions

    def _advance(self, connection: Connection, cursor: Cursor, count: int, last: tuple | None, limit: int) -> None:
        if count < limit:  # this group is done: the next one starts from its beginning
            cursor.group, cursor.after = self._next_group(connection, cursor.group), None
            cursor.done = cursor.group is None
        elif last is not None:
            cursor.after = last
