"""The column mapping: which header is the phone, the name, the labels…, and how to merge.

One function, :func:`confirm_mapping`, serves the API (PUT /imports/{id}/mapping) and the
operator CLI: it validates the mapping against the job's headers and the strategies the
vendor may use, stores it, moves the job ``AWAITING_MAPPING → MAPPING_CONFIRMED → QUEUED``
and enqueues one ``imports.process_chunk`` task per chunk (sent after commit). Every
refusal is a 422 that says what to fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from kloyst.api import MergeStrategy, parse, Schema, Unprocessable
from kloyst_plugins.imports import services
from kloyst_plugins.imports.models import ChunkStatus, ContactImportChunk, ContactImportJob, ImportStatus
from kloyst_plugins.imports.phonecache import region_is_supported

PROCESS_CHUNK = "imports.process_chunk"
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
MAX_LABEL = 64


class ColumnsBody(Schema):
    """The file's column for each field. ``phone``, ``bsuid`` (WhatsApp business-scoped user ids), or both: a
    row is imported when it has either (a row with a BSUID and no number is a contact known by its BSUID)."""

    phone: str | None = Field(default=None, min_length=1, max_length=255)
    bsuid: str | None = Field(default=None, min_length=1, max_length=255)
    name: str | None = Field(default=None, max_length=255)
    country: str | None = Field(default=None, max_length=255)
    labels: str | None = Field(default=None, max_length=255)
    attributes: dict[str, Annotated[str, Field(max_length=255)]] = Field(default_factory=dict, max_length=50)


class MappingBody(Schema):
    columns: ColumnsBody
    default_country: str | None = Field(default=None, min_length=2, max_length=2)
    labels: list[Annotated[str, Field(max_length=255)]] = Field(default_factory=list, max_length=20)
    merge_strategy: str = Field(min_length=1, max_length=64)


@dataclass(frozen=True)
class ColumnPlan:
    """The mapping as positions in a row, resolved once per chunk."""

    phone: int | None
    name: int | None
    country: int | None
    labels: int | None
    attributes: tuple[tuple[str, int], ...]
    headers: tuple[str, ...]
    bsuid: int | None = None

    @classmethod
    def for_job(cls, job: ContactImportJob) -> ColumnPlan:
        headers = tuple(job.headers or ())
        position = {header: i for i, header in reversed(list(enumerate(headers)))}
        columns = job.mapping or {}

        def at(key):
            header = columns.get(key)
            return position[header] if header is not None else None

        return cls(phone=at("phone"), name=at("name"), country=at("country"), labels=at("labels"),
                   attributes=tuple((key, position[h]) for key, h in (columns.get("attributes") or {}).items()),
                   headers=headers, bsuid=at("bsuid"))


def split_labels(cell: str) -> list[str]:
    """A labels cell: ``"vip, delhi; 2024"`` → ``["vip", "delhi", "2024"]`` (split on , or ;)."""
    return [part.strip()[:MAX_LABEL] for part in re.split(r"[,;]", cell) if part.strip()]


def validate(job: ContactImportJob, body: MappingBody, strategies: dict[str, MergeStrategy]) -> dict:
    """The mapping as stored on the job, or Unprocessable naming every problem."""
    problems: list[dict] = []
    headers = list(job.headers or [])
    columns = body.columns
    singles = {"phone": columns.phone, "bsuid": columns.bsuid, "name": columns.name, "country": columns.country,
               "labels": columns.labels}
    if columns.phone is None and columns.bsuid is None:
        problems.append({"field": "columns.phone", "problem": "map the column of phone numbers, the column of WhatsApp "
                                                              "BSUIDs (columns.bsuid), or both"})
    for field, header in [*singles.items(), *((f"attributes.{k}", h) for k, h in columns.attributes.items())]:
        if header is not None and header not in headers:
            problems.append({"field": f"columns.{field}", "problem": f"no column {header!r} in the file; its "
                                                                      f"columns are {headers}"})
    used: dict[str, str] = {}
    for field, header in singles.items():
        if header is None:
            continue
        if header in used:  # one column cannot be both the phone and the name, say
            problems.append({"field": f"columns.{field}", "problem": f"column {header!r} is already mapped to "
                                                                      f"{used[header]}"})
        used.setdefault(header, field)
    for key, header in columns.attributes.items():
        if not ATTRIBUTE_KEY.match(key):
            problems.append({"field": f"columns.attributes.{key}", "problem": "attribute keys start with a letter and "
                             "use letters, digits, '_', '.' or '-' (at most 64)"})
        if header in used:
            problems.append({"field": f"columns.attributes.{key}", "problem": f"column {header!r} is already mapped "
                                                                              f"to {used[header]}"})
        used.setdefault(header, f"attributes.{key}")
    country = body.default_country.upper() if body.default_country else None
    if country is not None and not region_is_supported(country):
        problems.append({"field": "default_country", "problem": f"{body.default_country!r} is not an ISO 3166 "
                                                                "country code that phone numbers are known for"})
    labels = list(dict.fromkeys(label.strip() for label in body.labels if label.strip()))
    if any(len(label) > MAX_LABEL for label in labels):
        problems.append({"field": "labels", "problem": f"labels are at most {MAX_LABEL} characters"})
    if body.merge_strategy not in strategies:
        problems.append({"field": "merge_strategy", "problem": f"unknown merge strategy {body.merge_strategy!r}; "
                                                               f"available: {', '.join(sorted(strategies))}"})
    if problems:
        raise Unprocessable("the mapping is invalid: " + "; ".join(f"{p['field']}: {p['problem']}"
                                                                   for p in problems[:5]),
                            code="invalid_mapping",
                            details={"fields": problems, "available_strategies": sorted(strategies)})
    mapping = {key: value for key, value in singles.items() if value is not None}
    if columns.attributes:
        mapping["attributes"] = dict(columns.attributes)
    return {"mapping": mapping, "default_country": country, "add_labels": labels,
            "merge_strategy": body.merge_strategy}


def confirm_mapping(db, enqueue, job: ContactImportJob, data, strategies: dict[str, MergeStrategy]) -> None:
    """Validate ``data`` (the request body), store it and queue the chunks; ``enqueue(name, **kw)`` sends after commit.

    The job must be AWAITING_MAPPING (409 otherwise: a mapping cannot change under running chunks).
    """
    services.lock(db, job)
    if job.status != ImportStatus.AWAITING_MAPPING.value:
        raise services.InvalidTransition(f"the import is {job.status}; a mapping is accepted only while it is "
                                         f"{ImportStatus.AWAITING_MAPPING.value}", details={"status": job.status})
    chosen = validate(job, data if isinstance(data, MappingBody) else parse(MappingBody, data), strategies)
    job.mapping = chosen["mapping"]
    job.default_country = chosen["default_country"]
    job.add_labels = chosen["add_labels"]
    job.merge_strategy = chosen["merge_strategy"]
    services.transition(job, ImportStatus.MAPPING_CONFIRMED)
    services.transition(job, ImportStatus.QUEUED)
    chunks = db.query(ContactImportChunk.index).filter(ContactImportChunk.job_id == job.id,
                                                       ContactImportChunk.status == ChunkStatus.PENDING.value) \
        .order_by(ContactImportChunk.index).all()
    if not chunks:  # a file with a header and no rows: nothing to do, nothing failed
        services.transition(job, ImportStatus.COMPLETED)
    for (index,) in chunks:
        enqueue(PROCESS_CHUNK, vendor_id=job.vendor_id, job_id=job.id, chunk_index=index)
    db.flush()
