"""A prepaid wallet per vendor, its append-only ledger, and the holds that reserve money for queued work.

Three tables, one rule: **money moves only by appending a ledger entry, and the wallet row
changes in the same transaction by exactly that entry's deltas** (:mod:`.ledger` is the one
writer). So, at every commit:

* ``wallet.balance_micros == Σ ledger_entry.balance_delta_micros`` (money the vendor has);
* ``wallet.held_micros == Σ ledger_entry.held_delta_micros == Σ outstanding of its holds``
  (money reserved for queued messages, still the vendor's until captured);
* ``0 <= held <= balance``: CHECK constraints, so even a bug or a lost race is refused by the
  database rather than stored as a negative balance.

``ledger_entry`` refuses UPDATE and DELETE (a trigger, created by the migration): a correction
is a new ADJUSTMENT or REFUND entry, never an edit. ``seq`` orders entries (statements, running
balances); ``id`` is the public identifier. ``(vendor_id, idempotency_key)`` is unique, so a
retried movement meets the entry it already made instead of moving money twice.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from kloyst.api import Base, TenantScoped, Timestamped, new_id, utcnow

BigId = BigInteger().with_variant(Integer, "sqlite")


class EntryKind(str, enum.Enum):
    TOPUP = "TOPUP"  # balance +
    HOLD = "HOLD"  # held + (available −)
    CAPTURE = "CAPTURE"  # balance −, held − (a hold's money spent)
    RELEASE = "RELEASE"  # held − (a hold's money back to available)
    REFUND = "REFUND"  # balance + (a capture given back)
    ADJUSTMENT = "ADJUSTMENT"  # balance ± (an admin's correction; Meta charging a dearer category than held)


class Wallet(TenantScoped, Timestamped, Base):
    __tablename__ = "wallet"
    __table_args__ = (
        CheckConstraint("balance_micros >= 0", name="balance_not_negative"),
        CheckConstraint("held_micros >= 0", name="held_not_negative"),
        CheckConstraint("held_micros <= balance_micros", name="held_within_balance"),
        CheckConstraint("low_balance_threshold_micros >= 0", name="threshold_not_negative"),
    )

    # One wallet per vendor: the unique constraint is also the vendor's index.
    vendor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"), unique=True)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    currency: Mapped[str] = mapped_column(String(3))
    balance_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    held_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    low_balance_threshold_micros: Mapped[int] = mapped_column(BigInteger, default=0)  # 0: no alert
    # True from the moment available fell below the threshold (and WalletLowBalance was recorded)
    # until it is back at or above it: what makes the event once per crossing.
    low_balance_flag: Mapped[bool] = mapped_column(default=False)


class LedgerEntry(TenantScoped, Base):
    __tablename__ = "ledger_entry"
    __api_name__ = "ledger_entry"
    __table_args__ = (
        UniqueConstraint("vendor_id", "idempotency_key"),
        Index("ix_ledger_entry_vendor_seq", "vendor_id", "seq"),
        Index("ix_ledger_entry_vendor_created", "vendor_id", "created_at"),
        Index("ix_ledger_entry_hold", "hold_id"),
        CheckConstraint("amount_micros > 0", name="amount_positive"),
        CheckConstraint("kind IN ('TOPUP', 'HOLD', 'CAPTURE', 'RELEASE', 'REFUND', 'ADJUSTMENT')", name="kind"),
    )

    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    id: Mapped[uuid.UUID] = mapped_column(unique=True, default=new_id)
    vendor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    amount_micros: Mapped[int] = mapped_column(BigInteger)  # always > 0; the deltas carry the direction
    balance_delta_micros: Mapped[int] = mapped_column(BigInteger)
    held_delta_micros: Mapped[int] = mapped_column(BigInteger)
    hold_id: Mapped[uuid.UUID | None]  # no FK: the hold row is written after its HOLD entry
    message_id: Mapped[uuid.UUID | None]  # no FK: the wallet does not depend on the messages plugin
    reference: Mapped[str | None] = mapped_column(String(255))
    idempotency_key: Mapped[str] = mapped_column(String(255))
    request_hash: Mapped[str] = mapped_column(String(64))
    # No FK either: an append-only row cannot be SET NULL when a user is deleted, and who did it stays on record.
    actor_user_id: Mapped[uuid.UUID | None]
    note: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class WalletHold(TenantScoped, Timestamped, Base):
    """Money reserved for a batch of work (a campaign): captured bit by bit, the rest released."""

    __tablename__ = "wallet_hold"
    __api_name__ = "wallet_hold"
    __table_args__ = (
        Index("ix_wallet_hold_vendor_reference", "vendor_id", "reference"),
        CheckConstraint("amount_micros > 0", name="amount_positive"),
        CheckConstraint("captured_micros >= 0 AND released_micros >= 0 AND refunded_micros >= 0",
                        name="parts_not_negative"),
        CheckConstraint("captured_micros + released_micros <= amount_micros", name="within_amount"),
        CheckConstraint("refunded_micros <= captured_micros", name="refunds_within_captures"),
    )

    vendor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"))
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    amount_micros: Mapped[int] = mapped_column(BigInteger)
    captured_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    released_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    refunded_micros: Mapped[int] = mapped_column(BigInteger, default=0)  # of the captured, given back
    reference: Mapped[str] = mapped_column(String(255))
