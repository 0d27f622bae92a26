"""The campaigns plugin's tasks: writing one fan-out chunk (see :mod:`.fanout`)."""

from __future__ import annotations

import logging
import uuid

from kloyst.api import Reschedule, task
from kloyst_plugins.campaigns import fanout

log = logging.getLogger(__name__)

FAN_OUT_CHUNK = "campaigns.fan_out_chunk"
BUSY_RETRY_SECONDS = 0.5  # a chunk another transaction holds is tried again this soon (not a failure)


@task(FAN_OUT_CHUNK)
def fan_out_chunk(ctx, *, vendor_id: uuid.UUID, campaign_id: uuid.UUID, seq_from: int) -> None:
    result = fanout.write_chunk(ctx.db, ctx.registry, vendor_id=vendor_id, campaign_id=campaign_id,
                                seq_from=seq_from)
    if result.busy:
        raise Reschedule(BUSY_RETRY_SECONDS, f"chunk {seq_from} of campaign {campaign_id} is held right now")
    if not result.already_done:
        log.info("campaign %s: chunk %d written (%d messages, %d skipped)", campaign_id, seq_from, result.written,
                 result.skipped)


def enqueue_chunks(enqueue, *, vendor_id: uuid.UUID, campaign_id: uuid.UUID, seq_froms) -> None:
    """Send one task per chunk after the caller's transaction commits (``enqueue`` is request's or ctx's)."""
    for seq_from in seq_froms:
        enqueue(FAN_OUT_CHUNK, vendor_id=vendor_id, campaign_id=campaign_id, seq_from=seq_from)
