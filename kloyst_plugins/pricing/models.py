"""Rate cards, fee rules and quotations.

A :class:`PricingSnapshot` is one rate card as Meta published it, in one currency, from an
effective date: its :class:`PricingRate` rows (market × category), its volume bands
(:class:`PricingTier`) and the country → market mapping it was priced with
(:class:`PricingMarket`). A snapshot is never edited once a quotation used it (see
:mod:`.snapshots`); a newer snapshot in the same currency takes over from its own effective
date, and every quotation keeps the id of the snapshot it was priced from, so a later card
never changes an existing quote.

Platform rows (cards, fee rules) carry no tenant; quotations and their items are the
vendor's. Money is in micro-units (:mod:`kloyst.money`); percentages are stored the same way,
in millionths of a percent (``10.5 %`` → ``10_500_000``), so they are exact on every dialect.
"""

from __future__ import annotations

import datetime as dt
import enum
import uuid

from sqlalchemy import (BigInteger, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint, event,
                        exists, select)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from kloyst.api import Base, Conflict, new_id, TenantScoped, Timestamped, utcnow


class Category(str, enum.Enum):
    """Columns of Meta's card. Templates are MARKETING, UTILITY or AUTHENTICATION; the other two are Meta's."""

    MARKETING = "MARKETING"
    UTILITY = "UTILITY"
    AUTHENTICATION = "AUTHENTICATION"
    AUTHENTICATION_INTERNATIONAL = "AUTHENTICATION_INTERNATIONAL"
    SERVICE = "SERVICE"


# What a quotation may be for: the categories a template can have.
QUOTABLE = (Category.MARKETING.value, Category.UTILITY.value, Category.AUTHENTICATION.value)


class QuotationStatus(str, enum.Enum):
    ACTIVE = "ACTIVE"
    ACCEPTED = "ACCEPTED"  # a campaign launched with it: it counts toward the month's tier volume
    EXPIRED = "EXPIRED"


class PdfStatus(str, enum.Enum):
    PENDING = "PENDING"
    GENERATING = "GENERATING"
    READY = "READY"
    FAILED = "FAILED"


class PricingSnapshot(Base):
    __tablename__ = "pricing_snapshot"
    __table_args__ = (Index("ix_pricing_snapshot_current", "currency", "effective_from"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    currency: Mapped[str] = mapped_column(String(3))
    effective_from: Mapped[dt.datetime]
    note: Mapped[str] = mapped_column(String(500), default="")
    # The files' SHA-256: loading the same card twice (the development card at every start) finds it.
    source_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("app_user.id", ondelete="SET NULL"))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class PricingRate(Base):
    """Meta's list rate for one market and category; a category the card marks ``n/a`` has no row."""

    __tablename__ = "pricing_rate"
    __table_args__ = (UniqueConstraint("snapshot_id", "market", "category"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    snapshot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pricing_snapshot.id", ondelete="CASCADE"))
    market: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(32))
    rate_micros: Mapped[int] = mapped_column(BigInteger)


class PricingMarket(Base):
    """Which market a country's numbers are priced in, for one snapshot (Meta moves countries between groups)."""

    __tablename__ = "pricing_market"
    __table_args__ = (UniqueConstraint("snapshot_id", "country"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    snapshot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pricing_snapshot.id", ondelete="CASCADE"))
    country: Mapped[str] = mapped_column(String(3))  # ISO 3166 alpha-2 ("001" for non-geographic numbers)
    calling_code: Mapped[int] = mapped_column(Integer)
    market: Mapped[str] = mapped_column(String(100))


class PricingTier(Base):
    """One volume band of a market and category: messages ``band_from``…``band_to`` of a calendar month."""

    __tablename__ = "pricing_tier"
    __table_args__ = (UniqueConstraint("snapshot_id", "market", "category", "band_from"),)

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    snapshot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pricing_snapshot.id", ondelete="CASCADE"))
    market: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(32))
    band_from: Mapped[int] = mapped_column(BigInteger)
    band_to: Mapped[int | None] = mapped_column(BigInteger)  # None: no upper bound
    rate_type: Mapped[str] = mapped_column(String(8))  # LIST or TIER, as Meta writes it
    rate_micros: Mapped[int] = mapped_column(BigInteger)
    discount_micropercent: Mapped[int] = mapped_column(BigInteger, default=0)  # -5 % → -5_000_000


class PlatformFeeRule(Timestamped, Base):
    """The platform's margin: a markup, a fee per message and a minimum charge per quotation.

    ``vendor_id`` None applies to every vendor; a vendor's own active rules replace the global
    ones for that vendor (see :mod:`.fees`).
    """

    __tablename__ = "pricing_fee_rule"

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    vendor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    currency: Mapped[str] = mapped_column(String(3))
    markup_micropercent: Mapped[int] = mapped_column(BigInteger, default=0)
    per_message_fee_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    minimum_charge_micros: Mapped[int] = mapped_column(BigInteger, default=0)
    valid_from: Mapped[dt.datetime]
    valid_to: Mapped[dt.datetime | None]
    active: Mapped[bool] = mapped_column(default=True)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("app_user.id", ondelete="SET NULL"))


class Quotation(TenantScoped, Timestamped, Base):
    __tablename__ = "quotation"
    __api_name__ = "quotation"
    __table_args__ = (Index("ix_quotation_vendor_created", "vendor_id", "created_at", "id"),
                      Index("ix_quotation_accepted", "vendor_id", "category", "accepted_at"))

    vendor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"), nullable=False)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    # RESTRICT: a snapshot a quotation was priced from can never disappear.
    snapshot_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("pricing_snapshot.id", ondelete="RESTRICT"))
    currency: Mapped[str] = mapped_column(String(3))
    category: Mapped[str] = mapped_column(String(32))
    recipients: Mapped[int] = mapped_column(BigInteger)
    subtotal_micros: Mapped[int] = mapped_column(BigInteger)  # Meta's price after volume tiers
    fees_micros: Mapped[int] = mapped_column(BigInteger)  # what the per-message rules added (or took off)
    minimum_topup_micros: Mapped[int] = mapped_column(BigInteger, default=0)  # quote-level charges
    total_micros: Mapped[int] = mapped_column(BigInteger)
    adjustments: Mapped[list] = mapped_column(default=list)  # quote-level charges: [{rule, description, micros}]
    rules: Mapped[list] = mapped_column(default=list)  # the names of the rules that priced it, in order
    expires_at: Mapped[dt.datetime]
    status: Mapped[str] = mapped_column(String(16), default=QuotationStatus.ACTIVE.value)
    accepted_at: Mapped[dt.datetime | None]
    source: Mapped[dict] = mapped_column(default=dict)  # what was quoted: {"audience": …, "template_id": …}
    # An estimate, never a discount: recipients of a UTILITY quote whose customer-service window was open when
    # quoted (Meta does not charge a utility template delivered inside it), and what their messages would cost.
    estimated_free_in_window: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    estimated_free_in_window_micros: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    wallet_available_micros: Mapped[int | None] = mapped_column(BigInteger)  # at quoting time
    wallet_sufficient: Mapped[bool] = mapped_column(default=False)
    pdf_status: Mapped[str] = mapped_column(String(16), default=PdfStatus.PENDING.value)
    pdf_bytes: Mapped[bytes | None] = mapped_column(LargeBinary)
    pdf_error: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("app_user.id", ondelete="SET NULL"))

    items: Mapped[list[QuotationItem]] = relationship(order_by="QuotationItem.position", cascade="all, delete-orphan",
                                                      passive_deletes=True)


class QuotationItem(TenantScoped, Base):
    """One line: a country's recipients in one volume band, at one unit price."""

    __tablename__ = "quotation_item"
    __table_args__ = (Index("ix_quotation_item_quotation", "quotation_id", "position"),)

    vendor_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("vendor.id", ondelete="CASCADE"), nullable=False)
    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=new_id)
    quotation_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("quotation.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    country: Mapped[str | None] = mapped_column(String(3))  # None: numbers of no known country
    market: Mapped[str] = mapped_column(String(100))
    category: Mapped[str] = mapped_column(String(32))
    quantity: Mapped[int] = mapped_column(BigInteger)
    list_rate_micros: Mapped[int] = mapped_column(BigInteger)
    tier_from: Mapped[int | None] = mapped_column(BigInteger)
    tier_to: Mapped[int | None] = mapped_column(BigInteger)
    discount_micropercent: Mapped[int] = mapped_column(BigInteger, default=0)
    rate_micros: Mapped[int] = mapped_column(BigInteger)  # Meta's price per message in this band
    unit_price_micros: Mapped[int] = mapped_column(BigInteger)  # after every rule
    amount_micros: Mapped[int] = mapped_column(BigInteger)


class SnapshotInUse(Conflict):
    code = "snapshot_in_use"


def snapshot_in_use(connection, snapshot_id) -> bool:
    return bool(connection.scalar(select(exists().where(Quotation.snapshot_id == snapshot_id))))


def refuse_if_used(mapper, connection, target) -> None:
    """Once a quotation references a snapshot, it and its rates, bands and mapping refuse UPDATE and DELETE.

    Mapper events, so every ORM path is covered whoever wrote it; the quotation's foreign key
    (``RESTRICT``) also stops a delete of the snapshot made any other way.
    """
    snapshot_id = target.id if isinstance(target, PricingSnapshot) else target.snapshot_id
    if snapshot_in_use(connection, snapshot_id):
        raise SnapshotInUse(f"snapshot {snapshot_id} priced a quotation and can no longer change; load a new "
                            "snapshot with a later effective date instead")


for _model in (PricingSnapshot, PricingRate, PricingTier, PricingMarket):
    event.listen(_model, "before_update", refuse_if_used)
    event.listen(_model, "before_delete", refuse_if_used)
