"""Every route the README and docs/*.md name is a route Kloyst registers, written with its ``/v1``.

``GET /auth/me`` in a document sends a reader to a 404: a path that is a route only once
``/v1`` is put in front of it is reported as missing its prefix, and any ``/v1/…`` path (in a
table, in prose or in a curl line) must match a registered pattern, placeholders (``{id}``,
``<id>``, ``$CAMPAIGN_ID``, ``…``) standing for a path segment. Meta's own Graph paths
(``/{phone-number-id}/messages``), the sandbox's (``/_sandbox/…``) and the metrics listener's
``/metrics`` are not Kloyst's API and are left alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kloyst import make_configurator, testing

ROOT = Path(__file__).resolve().parents[2]
METHOD = r"(?:GET|POST|PUT|PATCH|DELETE)"
_NAMED = re.compile(rf"\b{METHOD}(?:\\?\|{METHOD})*\s+(/[^\s`'\")\[\],;]*)")
_V1 = re.compile(r"(?<![A-Za-z_/.-])(/v1/[^\s`'\")\[\],;]*)")
_CODE_PATH = re.compile(r"`(/[A-Za-z][^\s`]*)`")
# <id>, {id}, $CAMPAIGN_ID, and an f-string's {note['id']} cut short by the quote; a final … is any rest of a path.
_SEGMENT_PLACEHOLDER = re.compile(r"<[^<>/]+>|\{[^{}/]*\}?|\$\{?\w+\}?|…(?!$)")
NOT_OURS = ("/_sandbox", "/metrics", "/{")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def normalise(path: str) -> list[str]:
    """``/v1/campaigns/{id}/quote\\|launch?x=1`` → the paths it names, placeholders as ``{x}``."""
    path = path.replace("\\|", "|").split("?", 1)[0].rstrip(".:")
    first, *alternatives = path.split("|")
    paths = [first] + [first.rsplit("/", 1)[0] + "/" + alternative for alternative in alternatives]
    return [_SEGMENT_PLACEHOLDER.sub("{x}", p).replace("…", "{*}").rstrip("/") or "/" for p in paths]


def named_routes(text: str) -> set[str]:
    """Paths ``text`` names as routes: after a method, or under /v1/ anywhere."""
    found = {p for raw in _NAMED.findall(text) + _V1.findall(text) for p in normalise(raw)}
    return {p for p in found if not p.startswith(NOT_OURS)}


def code_paths(text: str) -> set[str]:
    """Every path written alone in backticks (`/auth/verify-email`): it may be a route that lost its /v1."""
    return {p for raw in _CODE_PATH.findall(text) for p in normalise(raw)}


class Routes:
    """The registered patterns; a named path is one when a pattern matches it segment by segment."""

    def __init__(self, patterns: set[str]) -> None:
        self.patterns = patterns
        self._exact = [self._regex(p) + "$" for p in patterns]

    @staticmethod
    def _regex(pattern: str) -> str:
        return "^" + re.escape(pattern).replace(r"\{x\}", "[^/]+")

    def __contains__(self, path: str) -> bool:
        if path.endswith("{*}"):  # `/v1/admin/…`: some route under it
            under = re.compile(self._regex(path[:-3]))
            return any(under.match(pattern) for pattern in self.patterns)
        return any(re.match(exact, path) for exact in self._exact)


@pytest.fixture(scope="module")
def routes(tmp_path_factory) -> Routes:
    here = tmp_path_factory.mktemp("routes")
    settings = {**testing.TEST_SETTINGS, "kloyst.database.url": f"sqlite:///{here / 'kloyst.sqlite'}",
                "kloyst.log.dir": str(here / "log"), "kloyst.mail.file_dir": str(here / "mail")}
    config = make_configurator({"here": str(here)}, settings, environ={})
    config.commit()  # plugin routes are registered in an action of their own
    try:
        return Routes({"/" + re.sub(r"\{[^{}]+\}", "{x}", route.pattern).lstrip("/")
                       for route in config.get_routes_mapper().get_routes()})
    finally:
        config.registry["kloyst.engine"].dispose()


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_route_a_document_names_is_registered_with_its_prefix(path, routes):
    text = path.read_text(encoding="utf-8")
    unknown = sorted(p for p in named_routes(text) if p not in routes and f"/v1{p}" not in routes)
    unprefixed = sorted(p for p in named_routes(text) | code_paths(text)
                        if p not in routes and f"/v1{p}" in routes)
    assert unprefixed == [], f"{path.name} leaves /v1 out of these paths: {unprefixed}"
    assert unknown == [], f"{path.name} names routes Kloyst does not have: {unknown}"


def test_the_extraction_reads_alternatives_placeholders_and_curl_urls():
    text = ("`POST /v1/campaigns/{id}/quote\\|launch` · `GET /auth/me` · "
            'curl -s "http://127.0.0.1:6543/v1/quotations/$QUOTATION_ID/pdf?x=1" · `POST /{phone-number-id}/messages`')
    assert named_routes(text) == {"/v1/campaigns/{x}/quote", "/v1/campaigns/{x}/launch", "/auth/me",
                                  "/v1/quotations/{x}/pdf"}


def test_a_named_path_matches_a_registered_pattern_segment_by_segment():
    routes = Routes({"/v1/plugins/{x}", "/v1/admin/outbox/dead"})
    assert "/v1/plugins/contacts" in routes and "/v1/plugins/{x}" in routes
    assert "/v1/plugins/contacts/extra" not in routes and "/v1/plugin/contacts" not in routes
    assert "/v1/admin/{*}" in routes and "/v1/vendor/{*}" not in routes
