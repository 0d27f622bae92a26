"""The quotation PDF task: ``PENDING → GENERATING → READY | FAILED``, the state kept on the quotation row.

``QuotationService.quote`` asks for the task with every quotation; it runs once the quotation
commits, in three steps, so that rendering, the slow part, holds no lock on any database:

1. it claims the quotation in a short transaction of its own (GENERATING, committed at once
   so a client polling sees it);
2. it renders from a read-only scope, which on the embedded default's SQLite takes no write
   lock (:mod:`kloyst.db.sqlite`), so the API, the relay and the other tasks write meanwhile;
3. it stores the result in the task's own transaction, whose first statement that is: on
   SQLite the moment it takes the database's one write lock, for one row.

A rendering error is recorded (FAILED, with the reason) rather than retried: the same
quotation would fail the same way. A worker killed mid-render leaves GENERATING behind; the
outbox delivers the task again and it claims the quotation anew, since only READY is final.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import update

from kloyst.api import session_scope, task, Vendor
from kloyst_plugins.pricing import pdf
from kloyst_plugins.pricing.models import PdfStatus, PricingSnapshot, Quotation

log = logging.getLogger(__name__)

GENERATE_PDF = "pricing.generate_quotation_pdf"


def _claim(ctx, quotation_id: uuid.UUID) -> bool:
    with session_scope(ctx.registry["kloyst.session_factory"], vendor_id=ctx.vendor_id) as db:
        claimed = db.execute(update(Quotation)
                             .where(Quotation.id == quotation_id, Quotation.pdf_status != PdfStatus.READY.value)
                             .values(pdf_status=PdfStatus.GENERATING.value, pdf_error=None)
                             .execution_options(synchronize_session=False))
        return claimed.rowcount == 1


def _render(ctx, quotation_id: uuid.UUID) -> tuple[bytes | None, str | None]:
    """``(pdf, None)``, or ``(None, reason)`` when the quotation cannot be rendered."""
    with session_scope(ctx.registry["kloyst.session_factory"], vendor_id=ctx.vendor_id, read_only=True) as db:
        quotation = db.get(Quotation, quotation_id)
        try:
            vendor = db.get(Vendor, quotation.vendor_id)
            snapshot = db.get(PricingSnapshot, quotation.snapshot_id)
            return pdf.render(quotation, snapshot, vendor.name, ctx.settings), None
        except pdf.NOT_CONFIGURED as exc:  # the deployment's to fix, and the message says how: no traceback
            log.error("quotation %s: no PDF: %s", quotation_id, exc)
            return None, str(exc)[:500]
        except Exception as exc:  # recorded for the client instead of retried: the same input fails the same way
            log.exception("quotation %s: PDF generation failed", quotation_id)
            return None, f"{type(exc).__name__}: {exc}"[:500]


@task(GENERATE_PDF)
def generate_quotation_pdf(ctx, *, vendor_id: uuid.UUID, quotation_id: uuid.UUID) -> str:
    if not _claim(ctx, quotation_id):
        log.info("quotation %s: PDF already ready or quotation gone; nothing to do", quotation_id)
        return "skipped"
    content, error = _render(ctx, quotation_id)
    quotation = ctx.db.get(Quotation, quotation_id)
    if quotation is None:
        return "skipped"
    if error is not None:
        quotation.pdf_status, quotation.pdf_error = PdfStatus.FAILED.value, error
        return PdfStatus.FAILED.value
    quotation.pdf_bytes, quotation.pdf_status, quotation.pdf_error = content, PdfStatus.READY.value, None
    return PdfStatus.READY.value


TASKS = [generate_quotation_pdf]
