"""``process_heartbeat``: one row per running ``kloyst run`` process, beaten every second while it lives."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.db import Base, utcnow


class ProcessHeartbeat(Base):
    """A live process, as far as the database can tell: its ``beat_at`` is recent.

    A platform table (processes serve every vendor). The row is inserted when the process
    starts, ``beat_at`` is moved forward every ``kloyst.heartbeat.interval_seconds``, and the
    row is deleted when the process stops cleanly. A process killed outright leaves its row
    behind with a ``beat_at`` that no longer moves: that is how the others know it is dead.
    """

    __tablename__ = "process_heartbeat"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))  # SERVICE_TYPE
    hostname: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    started_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    beat_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
