"""Templates as Meta has them: sync a WABA's list, submit a new one, find the one a send may use.

Meta is the source of truth for what a template is and whether it may be sent; Kloyst keeps
a per-vendor copy so that a send is checked without a Graph call. The copy changes in three
ways only: a sync (:func:`sync_waba`, upserting by WABA, name and language and marking what
Meta no longer lists DELETED — rows are kept, since messages point at them), a submission
(:func:`submit`, stored only once Meta accepted it), and status webhooks (:mod:`.webhooks`).

Meta's refusals are classified once (:mod:`kloyst.meta.errors`): a sync raises on a
transient one so the outbox retries it, and records a permanent one on
:class:`~.models.TemplateSync` instead of retrying something that cannot succeed.

A sync costs Meta calls, so it is queued once per WABA however often it is asked for
(:func:`request_sync`), and two syncs of one WABA at once take turns on its
:class:`~.models.TemplateSync` row (:func:`_locked_record`) instead of both inserting the
same templates and one of them failing on the unique key.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Mapping
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.dialects import postgresql, sqlite

from kloyst.api import (
    ApiError,
    Conflict,
    ErrorKind,
    FieldCipher,
    MetaClient,
    MetaError,
    NotFound,
    tenancy,
    Unprocessable,
    utcnow,
)
from kloyst_plugins.templates import parameters
from kloyst_plugins.templates.models import MessageTemplate, ParameterFormat, TemplateStatus, TemplateSync
from kloyst_plugins.waba.api import WabaAccess, accessible_wabas

log = logging.getLogger(__name__)

SYNC_PAGE_SIZE = 100
SYNC_FIELDS = "id,name,language,status,category,parameter_format,components,quality_score,rejected_reason"
# Meta's answer to a template name that already exists in that language (code 100).
DUPLICATE_SUBCODE = 2388024


class TemplateNotFound(NotFound):
    code = "template_not_found"


class TemplateNotSendable(Unprocessable):
    code = "template_not_approved"


class MetaBadGateway(ApiError):
    status, code = 502, "meta_error"


class MetaUnavailable(ApiError):
    status, code = 503, "meta_unavailable"


def set_components(template: MessageTemplate, components: list) -> None:
    """Store Meta's components with the variables parsed from them (what sends are checked against)."""
    template.components = components
    template.header_variables = parameters.header_variables(components)
    template.body_variables = parameters.body_variables(components)


def find_sendable(db, meta_waba_id: str, name: str, language: str) -> MessageTemplate:
    """The vendor's APPROVED template ``name`` in ``language`` of that WABA (``db`` is vendor-scoped).

    Raises :class:`TemplateNotFound` (404) when there is no such template and
    :class:`TemplateNotSendable` (422) when it exists but Meta would not send it.
    """
    template = db.scalar(select(MessageTemplate).where(MessageTemplate.meta_waba_id == meta_waba_id,
                                                       MessageTemplate.name == name,
                                                       MessageTemplate.language == language))
    if template is None:
        raise TemplateNotFound(f"no template {name!r} in language {language!r} for WABA {meta_waba_id}; check the "
                               "name and language, or sync templates from Meta")
    if template.status != TemplateStatus.APPROVED.value:
        raise TemplateNotSendable(f"template {name!r} ({language}) is {template.status}; only APPROVED templates "
                                  "can be sent", details={"template_id": str(template.id), "status": template.status})
    return template


def waba_access(db, cipher: FieldCipher, meta_waba_id: str) -> WabaAccess | None:
    """The credentials for ``meta_waba_id`` if the scoped vendor may use that WABA, else None."""
    return next((a for a in accessible_wabas(db, cipher) if a.meta_waba_id == meta_waba_id), None)


def _quality(item: Mapping[str, Any]) -> str | None:
    quality = item.get("quality_score")
    score = quality.get("score") if isinstance(quality, Mapping) else None
    return str(score) if score else None


def _reason(value: Any) -> str | None:
    # Meta says "NONE" when there is nothing to say.
    return str(value)[:500] if value and str(value).upper() != "NONE" else None


def apply_listing(template: MessageTemplate, item: Mapping[str, Any], now) -> None:
    """Copy one template of Meta's list onto its row."""
    template.meta_template_id = str(item["id"]) if item.get("id") is not None else template.meta_template_id
    template.status = str(item.get("status") or template.status)
    template.category = str(item.get("category") or template.category)
    template.parameter_format = str(item.get("parameter_format") or ParameterFormat.POSITIONAL.value)
    components = item.get("components")
    set_components(template, components if isinstance(components, list) else [])
    template.quality_score = _quality(item) or template.quality_score
    template.rejected_reason = _reason(item.get("rejected_reason"))
    template.last_synced_at = now


# A sync still queued this long after it was asked for is presumed lost (its task dead-lettered after its
# retries): asking again queues another. Should the first still run, the two take turns (_locked_record).
REQUEUE_AFTER = dt.timedelta(minutes=15)

_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def _ensure_record(db, vendor_id: uuid.UUID, meta_waba_id: str) -> None:
    """Create the vendor's sync row of the WABA unless it exists; a concurrent creator wins without an error."""
    insert = _INSERTS[db.get_bind().dialect.name]
    db.execute(tenancy.caller_scoped(
        insert(TemplateSync.__table__).values(id=uuid.uuid4(), vendor_id=vendor_id, meta_waba_id=meta_waba_id)
        .on_conflict_do_nothing(index_elements=["vendor_id", "meta_waba_id"])))


def request_sync(db, vendor_id: uuid.UUID, meta_waba_id: str) -> bool:
    """Mark a sync of the WABA queued unless one already is; True when the caller should queue the task.

    One conditional UPDATE decides, so of many requests at once exactly one gets True: on
    PostgreSQL the others wait for its row lock and then find ``queued_at`` set; on SQLite
    writers take turns.
    """
    _ensure_record(db, vendor_id, meta_waba_id)
    now = utcnow()
    return bool(db.execute(
        update(TemplateSync).where(TemplateSync.meta_waba_id == meta_waba_id,
                                   or_(TemplateSync.queued_at.is_(None), TemplateSync.queued_at < now - REQUEUE_AFTER))
        .values(queued_at=now).execution_options(synchronize_session=False)).rowcount)


def _locked_record(db, meta_waba_id: str) -> TemplateSync:
    """The scoped vendor's sync row of the WABA, locked until this transaction ends (PostgreSQL; SQLite's
    one writer needs no lock), and read after any sync that held it first has committed."""
    _ensure_record(db, tenancy.current_scope(db), meta_waba_id)
    return db.scalar(select(TemplateSync).where(TemplateSync.meta_waba_id == meta_waba_id)
                     .with_for_update().execution_options(populate_existing=True))


def forget_sync(db, meta_waba_id: str) -> None:
    """Drop the sync row of a WABA the vendor can no longer use (removed, or its shared numbers unassigned)."""
    record = db.scalar(select(TemplateSync).where(TemplateSync.meta_waba_id == meta_waba_id))
    if record is not None:
        db.delete(record)


def sync_waba(db, meta: MetaClient, access: WabaAccess) -> TemplateSync:
    """Bring the scoped vendor's copy of one WABA's templates in line with Meta's list.

    Raises :class:`MetaError` when Meta's refusal is worth retrying (the caller's transaction,
    and with it any partial work, is rolled back); records any other refusal and returns.
    """
    try:
        listed = meta.list_templates(access.meta_waba_id, limit=SYNC_PAGE_SIZE, fields=SYNC_FIELDS,
                                     token=access.token)
    except MetaError as exc:
        if exc.retryable:
            raise
        record = _locked_record(db, access.meta_waba_id)
        record.last_attempt_at, record.queued_at = utcnow(), None
        record.last_error = f"Meta refused to list the templates: {exc}"[:500]
        log.warning("template sync of WABA %s stopped: %s", access.meta_waba_id, exc)
        return record
    record = _locked_record(db, access.meta_waba_id)  # after Meta's answer: the lock is held for the writes only
    now = utcnow()
    record.last_attempt_at, record.queued_at = now, None
    existing = {(t.name, t.language): t for t in db.scalars(
        select(MessageTemplate).where(MessageTemplate.meta_waba_id == access.meta_waba_id))}
    seen: set[tuple[str, str]] = set()
    for item in listed:
        name, language = (item.get("name"), item.get("language")) if isinstance(item, Mapping) else (None, None)
        if not isinstance(name, str) or not isinstance(language, str):
            log.warning("template sync of WABA %s: skipped an item without name and language", access.meta_waba_id)
            continue
        if (name, language) in seen:
            continue
        seen.add((name, language))
        template = existing.get((name, language))
        if template is None:
            template = MessageTemplate(meta_waba_id=access.meta_waba_id, name=name, language=language)
            db.add(template)
        apply_listing(template, item, now)
    for key, template in existing.items():
        if key not in seen and template.status != TemplateStatus.DELETED.value:
            template.status = TemplateStatus.DELETED.value
            template.last_synced_at = now
    record.last_synced_at, record.template_count, record.last_error = now, len(seen), None
    db.flush()
    return record


def meta_refusal(exc: MetaError) -> ApiError:
    """The API error for a submission Meta did not accept, carrying Meta's own words and code."""
    said = exc.user_message or exc.details or exc.message
    details = {"meta_code": exc.code, "meta_subcode": exc.subcode, "meta_message": exc.message,
               "meta_details": exc.details, "meta_user_message": exc.user_message, "fbtrace_id": exc.fbtrace_id}
    if exc.code == 100 and exc.subcode == DUPLICATE_SUBCODE:
        return Conflict(f"Meta already has this template in this language ({said}); sync templates to see it",
                        code="duplicate_template", details=details)
    if exc.is_network:
        maybe = " It may have reached Meta: sync templates before submitting again." if exc.maybe_accepted else ""
        return MetaBadGateway(f"Meta could not be reached ({exc.message}).{maybe}", code="meta_unreachable",
                              details=details)
    if exc.kind is ErrorKind.AUTH:
        return MetaBadGateway(f"Meta refused the WABA's access token or permissions: {said}; update the WABA's "
                              "token", code="meta_auth_failed", details=details)
    if exc.retryable:
        retry = max(1, int(exc.classification.min_delay_seconds or 30))
        return MetaUnavailable(f"Meta could not take the template now ({said}); try again later", details=details,
                               headers={"Retry-After": str(retry)})
    return Unprocessable(f"Meta refused the template: {said}", code="meta_refused", details=details)


def submit(db, meta: MetaClient, access: WabaAccess, *, name: str, language: str, category: str,
           parameter_format: str, components: list) -> MessageTemplate:
    """Submit a checked definition to Meta and store it with the id and status Meta answered.

    Nothing is stored when Meta refuses (the error says why). A template Meta no longer has
    (DELETED here) may be submitted again under its name; any other existing one is a 409.
    """
    existing = db.scalar(select(MessageTemplate).where(MessageTemplate.meta_waba_id == access.meta_waba_id,
                                                       MessageTemplate.name == name,
                                                       MessageTemplate.language == language))
    if existing is not None and existing.status != TemplateStatus.DELETED.value:
        raise Conflict(f"template {name!r} already exists in {language} for WABA {access.meta_waba_id} "
                       f"({existing.status}); pick another name or language", code="duplicate_template",
                       details={"template_id": str(existing.id)})
    body = {"name": name, "language": language, "category": category, "parameter_format": parameter_format,
            "components": components}
    try:
        answer = meta.create_template(access.meta_waba_id, body, token=access.token)
    except MetaError as exc:
        raise meta_refusal(exc) from None
    if not isinstance(answer, Mapping) or answer.get("id") is None:
        raise MetaBadGateway("Meta accepted the template but answered without its id; sync templates to see it",
                             details={"answer": answer if isinstance(answer, Mapping) else None})
    template = existing or MessageTemplate(meta_waba_id=access.meta_waba_id, name=name, language=language)
    template.meta_template_id = str(answer["id"])
    template.status = str(answer.get("status") or TemplateStatus.PENDING.value)
    template.category = str(answer.get("category") or category)
    template.parameter_format = parameter_format
    template.quality_score = template.rejected_reason = None
    template.variable_mapping = {}  # a new definition: a mapping for the old one's variables may not fit
    set_components(template, components)
    db.add(template)
    db.flush()
    return template
