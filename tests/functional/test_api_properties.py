"""Property-based run of the whole API from its own OpenAPI document: no generated request gets a 5xx.

schemathesis reads ``/v1/openapi.json`` from the application and generates requests for
every operation: valid ones (bodies and queries that fit the declared schemas) and invalid
ones (wrong types, missing fields, out-of-range values). Each runs as the owner of a vendor
with every plugin on, or as a platform admin for ``/admin`` routes, so the requests get
past authentication into the views. Any 5xx is a bug: bad input must get a 4xx that says
what to fix. Beyond that, each answer must have a content type and shape the document
declares, and a request the document calls invalid must not succeed. The number of examples
is bounded so the run stays a test, not a campaign; ``KLOYST_API_PROPERTY_EXAMPLES`` raises
it for a longer hunt.
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.config._checks import NegativeDataRejectionConfig
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (content_type_conformance, negative_data_rejection,
                                               response_schema_conformance)

from kloyst.testing import enable_plugin

ANSWER_CHECKS = [content_type_conformance, response_schema_conformance]
DOCUMENT_CHECKS = [*ANSWER_CHECKS, negative_data_rejection]
EXAMPLES = int(os.environ.get("KLOYST_API_PROPERTY_EXAMPLES", "8"))
# The answers that refuse invalid input: schemathesis's list, plus 413 (an invalid body that is also too large).
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "413", "415", "422", "428", "429"]


@pytest.fixture
def signed_in(accounts, db, registry):
    """Headers of a vendor owner with every installed plugin on, and of a platform admin."""
    owner = accounts.vendor("Property Co")
    for name in registry["kloyst.plugin_manager"].infos:
        enable_plugin(db, owner.vendor_id, name)
    admin = accounts.platform_admin()
    db.commit()
    return {"vendor": owner.headers, "admin": admin.headers}


@pytest.fixture
def api_schema(wsgi_app, db_connection):
    schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", wsgi_app)
    # The access token is ours to send (each case gets the owner's or the admin's): left to schemathesis, a
    # "negative" case would break an Authorization header that never reaches the app, and the case would be
    # judged as invalid input accepted.
    schema.config.generation.update(with_security_parameters=False)
    schema.config.checks.negative_data_rejection = NegativeDataRejectionConfig(expected_statuses=REFUSALS)
    return schema


def _checks_for(case) -> list:
    """What the answer to ``case`` is held to.

    Invalid input must be refused only where the invalidity reaches the app. A multipart body and
    a query string are text on the wire: a number or a boolean "made invalid" there, a one-element
    list, or an empty object that sends nothing, arrive as the same bytes as valid ones. Query
    strictness is covered by its own tests (unknown and repeated parameters, numbers as times).
    """
    query = case.meta.components.get(ParameterLocation.QUERY) if case.meta is not None else None
    if case.media_type == "multipart/form-data" or (query is not None and query.mode.is_negative):
        return ANSWER_CHECKS
    return DOCUMENT_CHECKS


def _run(operation, mode: GenerationMode, headers: dict, failures: list) -> None:
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(generation_mode=mode))
    def check(case):
        response = case.call(headers={**(case.headers or {}), **headers})
        if response.status_code >= 500:
            failures.append(f"{operation.label} [{mode.value}] → {response.status_code}: "
                            f"{response.text[:300]}\n    reproduce: {case.as_curl_command()}")
            return
        try:  # the answer is what the document says, and invalid input is refused, not accepted
            case.validate_response(response, checks=_checks_for(case))
        except (AssertionError, BaseExceptionGroup) as exc:  # one failure, or a group of them
            failures.append(f"{operation.label} [{mode.value}] → {response.status_code}: {str(exc)[:500]}")

    try:
        check()
    except Unsatisfiable:
        if mode is GenerationMode.POSITIVE:
            raise
        # An operation with no parameters and no body has nothing that can be made invalid.


def test_generated_requests_never_get_a_server_error(api_schema, signed_in):
    failures: list[str] = []
    operations = 0
    for result in api_schema.get_all_operations():
        operation = result.ok()
        operations += 1
        headers = signed_in["admin"] if operation.path.startswith("/v1/admin") else signed_in["vendor"]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _run(operation, mode, headers, failures)
    assert operations > 100
    assert not failures, "server errors:\n" + "\n".join(failures)
