"""The quotation PDF task: ``PENDING → GENERATING → READY | FAILED``, the state kept on the quotation row.

The task is enqueued after the quotation commits (``request.enqueue``). It first claims the
quotation in a short transaction of its own (GENERATING, committed at once so a client
polling sees it), then renders and stores the PDF in the task's transaction (READY). A
rendering error is recorded (FAILED, with the reason) rather than retried: the same
quotation would fail the same way. A worker killed mid-render leaves GENERATING behind; the
outbox delivers the task again and it claims the quotation anew, since only READY is final.
"""

from __future__ import annotations

import logging
import uuid

from sqlalchemy import update

from kloyst.accounts.models import Vendor
from kloyst.db import session_scope
from kloyst.queue import task
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


@task(GENERATE_PDF)
def generate_quotation_pdf(ctx, *, vendor_id: uuid.UUID, quotation_id: uuid.UUID) -> str:
    if not _claim(ctx, quotation_id):
        log.info("quotation %s: PDF already ready or quotation gone; nothing to do", quotation_id)
        return "skipped"
    quotation = ctx.db.get(Quotation, quotation_id)
    try:
        vendor = ctx.db.get(Vendor, quotation.vendor_id)
        content = pdf.render(quotation, ctx.db.get(PricingSnapshot, quotation.snapshot_id), vendor.name)
    except Exception as exc:  # recorded for the client instead of retried: the same input fails the same way
        log.exception("quotation %s: PDF generation failed", quotation_id)
        quotation.pdf_status, quotation.pdf_error = PdfStatus.FAILED.value, f"{type(exc).__name__}: {exc}"[:500]
        return PdfStatus.FAILED.value
    quotation.pdf_bytes, quotation.pdf_status, quotation.pdf_error = content, PdfStatus.READY.value, None
    return PdfStatus.READY.value


TASKS = [generate_quotation_pdf]
