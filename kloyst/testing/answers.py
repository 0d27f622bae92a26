"""Real answers held to the OpenAPI document: what a route answered must be what the document says it answers.

The document's success schemas come from each view's ``response_schema`` (closed models: a
field the model does not list is a failure), its error answers from the one error envelope.
A test that drives the API (the executed README and docs, the property-based run) passes each
answer through :meth:`AnswerChecker.problems`; an empty list means the answer fits.

jsonschema does the validating (a test dependency): formats are not asserted, since JSON has
no uuid or date-time type and the renderer writes both as text.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

import jsonschema

_PLACEHOLDER = re.compile(r"\{[^{}/]+\}")


@dataclass(frozen=True)
class _Path:
    template: str
    pattern: re.Pattern


class AnswerChecker:
    """Finds the operation of a request in the document and checks its answer against the declared response."""

    def __init__(self, document: dict) -> None:
        self.document = document
        self._components = {"components": document.get("components", {})}
        # Literal paths before templated ones, so /contacts/export is not taken for /contacts/{id}.
        paths = sorted(document["paths"], key=lambda p: (p.count("{"), p))
        self._paths = [_Path(p, re.compile("^" + _PLACEHOLDER.sub("[^/]+", re.escape(p).replace(r"\{", "{")
                                                                  .replace(r"\}", "}")) + "$"))
                       for p in paths]

    def operation(self, method: str, path: str) -> tuple[str, dict] | None:
        """``(path template, operation)`` for a request path (query string ignored), or None."""
        path = path.split("?", 1)[0]
        for candidate in self._paths:
            if candidate.pattern.match(path):
                found = self.document["paths"][candidate.template].get(method.lower())
                if found is not None:
                    return candidate.template, found
        return None

    def problems(self, method: str, path: str, status: int, body: bytes | str | None,
                 content_type: str | None = None) -> list[str]:
        """What is wrong with this answer, by the document; ``[]`` when it fits."""
        where = f"{method.upper()} {path.split('?', 1)[0]} → {status}"
        found = self.operation(method, path)
        if found is None:
            return [f"{where}: no such operation in the document"]
        _, operation = found
        responses = operation["responses"]
        declared = responses.get(str(status)) or (responses.get("default") if status >= 400 else None)
        if declared is None:
            return [f"{where}: the document declares no {status} answer (it declares {sorted(responses)})"]
        content = declared.get("content") or {}
        if not content:
            return [] if not body else [f"{where}: the document declares no body, the answer has one"]
        media = (content_type or "application/json").split(";", 1)[0].strip()
        if media not in content:
            return [f"{where}: answered {media}, the document declares {sorted(content)}"]
        if media != "application/json":
            return []
        try:
            value = json.loads(body) if isinstance(body, (bytes, str)) else body
        except ValueError:
            return [f"{where}: the answer is not JSON: {str(body)[:200]!r}"]
        schema = {**self._components, **content[media].get("schema", {})}
        validator = jsonschema.Draft202012Validator(schema)
        return [f"{where}: {'/'.join(map(str, error.absolute_path)) or '(answer)'}: {error.message[:300]}"
                for error in validator.iter_errors(value)]
