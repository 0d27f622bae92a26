"""The standard plugin tests: one class every plugin's test suite subclasses.

```python
from kloyst.testing import StandardPluginTests


class TestNotesStandard(StandardPluginTests):
    plugin = "example"
```

The tests read everything from the running application (the route table, the OpenAPI
document, the plugin manager) and the real test database, so a route, a model or a migration
added later is covered without touching the subclass:

- **gate**: every route named ``<plugin>.…`` answers 404 ``not_found`` (the 404 of a route that
  does not exist) to the owner and to a member of a vendor that never enabled the plugin, and
  to one that enabled and then disabled it; 401 to an anonymous caller. The plugin's
  platform-admin routes (``admin.<plugin>.…``) answer 403 to a vendor's owner.
- **tenancy**: every route bound to a model (``add_route(..., model=…)``) answers 404 on every
  method to vendor A for vendor B's row, and leaves the row as it was.
- **OpenAPI**: every route and method of the plugin is in ``/v1/openapi.json`` and declares its
  success answer (a schema with fields, a file, or an empty 204).
- **migrations**: the plugin's alembic branch downgrades to base and upgrades back to every
  head with no drift between models and migrations, on a scratch PostgreSQL database and a
  scratch SQLite file, each built once per test session.
- **metadata**: ``kloyst_versions`` includes this Kloyst (third-party plugins must declare it),
  and every plugin the plugin ``requires`` is installed.

Fixtures used: ``testapp``, ``db``, ``registry``, ``accounts`` and ``enable_plugin`` (all from
Kloyst's pytest plugin). Rows for the tenancy test come from :meth:`make_row`; its default
builds a minimal valid row from the model's columns (:func:`kloyst.testing.route_walk.make_row`);
override it for a model that needs more, or return ``None`` to leave that model out.
"""

from __future__ import annotations

import atexit
import importlib
import importlib.metadata
import re
import shutil
import tempfile
import uuid

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from pyramid.interfaces import IRoutesMapper
from sqlalchemy import inspect as sa_inspect
from sqlalchemy import Table

from kloyst.testing import route_walk

_PLACEHOLDER = re.compile(r"\{(\w+)(?::[^}]*)?\}")
_BACKENDS = ("postgresql", "sqlite")
_scratch: dict[str, tuple] = {}  # backend -> (engine, url, cleanup): one scratch database per session


def _path(route) -> str:
    return route.generate({name: str(uuid.uuid4()) for name in _PLACEHOLDER.findall(route.pattern)})


def _openapi_path(route) -> str:
    path = _PLACEHOLDER.sub(r"{\1}", route.pattern)
    return path if path.startswith("/") else f"/{path}"


def _call(testapp, path: str, method: str, headers: dict | None = None):
    return testapp.request(path, method=method, headers=headers or {}, body=b"{}", content_type="application/json",
                           expect_errors=True)


def _snapshot(db, row) -> dict | None:
    db.expire_all()
    fresh = db.get(type(row), sa_inspect(row).identity)
    return None if fresh is None else {c.key: getattr(fresh, c.key) for c in sa_inspect(type(row)).column_attrs}


def _scratch_database(request, backend: str, pm):
    """The session's scratch database of ``backend``, migrated to every head (built on first use)."""
    if backend not in _scratch:
        from kloyst import testing
        from kloyst.db import make_engine, migrate

        if backend == "postgresql":
            name = f"{testing.database_prefix()}_scratch_{uuid.uuid4().hex[:8]}"
            url = testing.create_database(name)
            cleanup = lambda: testing.drop_database(name)  # noqa: E731
        else:
            directory = tempfile.mkdtemp(prefix="kloyst-scratch-")
            url = f"sqlite:///{directory}/scratch.db"
            cleanup = lambda: shutil.rmtree(directory, ignore_errors=True)  # noqa: E731
        engine = make_engine(url)
        try:
            migrate.upgrade(pm, engine)
        except BaseException:
            engine.dispose()
            cleanup()
            raise
        _scratch[backend] = (engine, url, cleanup)
        request.session.addfinalizer(lambda: _drop_scratch(backend))
    return _scratch[backend]


def _drop_scratch(backend: str) -> None:
    engine, _, cleanup = _scratch.pop(backend, (None, None, None))
    if engine is not None:
        engine.dispose()
        cleanup()


@atexit.register
def _drop_every_scratch() -> None:
    for backend in list(_scratch):
        _drop_scratch(backend)


def _plugin_tables(info) -> set[str]:
    """The tables of the plugin's ``model_modules`` (mapped classes and plain ``Table`` objects)."""
    from kloyst.db import Base

    modules = {importlib.import_module(name).__name__ for name in getattr(info.module, "model_modules", ())}
    tables = {m.local_table.name for m in Base.registry.mappers
              if m.class_.__module__ in modules and isinstance(m.local_table, Table)}
    for name in modules:
        tables |= {v.name for v in vars(importlib.import_module(name)).values() if isinstance(v, Table)}
    return tables


def _resolved(schema: dict, document: dict) -> dict:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def _declares_fields(schema: dict, document: dict) -> bool:
    schema = _resolved(schema, document)
    choices = schema.get("anyOf") or schema.get("oneOf")
    if choices:
        return all(_declares_fields(choice, document) for choice in choices)
    return schema.get("type") == "object" and bool(schema.get("properties"))


def _declared_success(operation: dict, document: dict) -> bool:
    """At least one 2xx answer, and every 2xx answer declares its body (fields, a file, or none for 204)."""
    answers = {s: a for s, a in operation.get("responses", {}).items() if s.startswith("2")}
    for status, answer in answers.items():
        content = answer.get("content", {})
        if status == "204":
            if content:
                return False
        elif not content or not all(
                _declares_fields(media.get("schema", {}), document) if media_type == "application/json"
                else media.get("schema", {}).get("type") == "string" for media_type, media in content.items()):
            return False
    return bool(answers)


class StandardPluginTests:
    """Subclass as ``class Test<Name>Standard(StandardPluginTests)`` with ``plugin = "<name>"``.

    Not named ``Test…``, so pytest collects the subclasses only.
    """

    plugin: str = ""
    #: Where the migration branch is taken down and up again; drop "sqlite" for a plugin that is
    #: never run embedded (on SQLite).
    migration_backends: tuple[str, ...] = _BACKENDS

    def make_row(self, db, model, vendor):
        """A row of ``model`` owned by ``vendor`` (a :class:`kloyst.testing.Account`), or None to leave it out.

        The default fills every required column with an invented value and follows foreign keys.
        """
        return route_walk.make_row(db, model, vendor.vendor_id, vendor.user.id)

    # -- helpers -----------------------------------------------------------------------------

    def _name(self) -> str:
        if not self.plugin:
            raise AssertionError(f"{type(self).__name__}: set plugin = '<name>' on the class")
        return self.plugin

    def _info(self, registry):
        pm = registry["kloyst.plugin_manager"]
        name = self._name()
        assert name in pm.infos, f"plugin {name!r} is not installed (installed: {sorted(pm.infos)})"
        return pm.infos[name]

    def _routes(self, registry, prefix: str) -> list:
        return [r for r in registry.queryUtility(IRoutesMapper).get_routes() if r.name.startswith(prefix)]

    def _plugin_routes(self, registry) -> list:
        return self._routes(registry, f"{self._name()}.")

    def _admin_routes(self, registry) -> list:
        return self._routes(registry, f"admin.{self._name()}.")

    def _operations(self, registry, routes) -> list[tuple]:
        return [(route, method) for route in routes for method in route_walk.route_methods(registry, route.name)]

    def _enable_with_requirements(self, registry, enable_plugin, account) -> None:
        pm = registry["kloyst.plugin_manager"]
        pending, done = [self._name()], set()
        while pending:
            name = pending.pop()
            if name in done or name in pm.essential:
                continue
            done.add(name)
            pending.extend(pm.infos[name].meta.requires)
        for name in done:
            enable_plugin(account, name)

    # -- (a) the gate ------------------------------------------------------------------------

    def test_standard_gate_every_route_is_404_without_the_plugin(self, testapp, registry, accounts, db,
                                                                 enable_plugin):
        from kloyst.accounts.models import Role

        info = self._info(registry)
        if info.meta.essential:
            pytest.skip(f"{self.plugin} is essential: on for every vendor, nothing to gate")
        operations = self._operations(registry, self._plugin_routes(registry))
        admin_operations = self._operations(registry, self._admin_routes(registry))
        if not operations and not admin_operations:
            pytest.skip(f"{self.plugin} has no routes")

        never = accounts.vendor("Never enabled")
        member = accounts.user(never.vendor, role=Role.MEMBER)
        was = accounts.vendor("Enabled, then disabled")
        self._enable_with_requirements(registry, enable_plugin, was)
        db.commit()
        testapp.delete(f"/v1/plugins/{self.plugin}", headers=was.headers, status=200)
        missing = _call(testapp, f"/v1/no-such-route-{uuid.uuid4().hex}", "GET", never.headers)
        assert missing.status_int == 404

        wrong = []
        for route, method in operations:
            path = _path(route)
            for who, account in (("owner", never), ("member", member), ("disabled vendor's owner", was)):
                response = _call(testapp, path, method, account.headers)
                error = response.json.get("error", {}) if response.content_type == "application/json" else {}
                if (response.status_int != 404 or error.get("code") != "not_found"
                        or "plugin" in error.get("message", "").lower()
                        or set(error) != set(missing.json["error"])):
                    wrong.append(f"{method} {_openapi_path(route)} as {who}: {response.status_int} "
                                 f"{response.text[:120]}")
            anonymous = _call(testapp, path, method)
            if anonymous.status_int != 401:
                wrong.append(f"{method} {_openapi_path(route)} anonymous: {anonymous.status_int}, not 401")
        for route, method in admin_operations:
            response = _call(testapp, _path(route), method, never.headers)
            if response.status_int != 403:
                wrong.append(f"{method} {_openapi_path(route)} (admin route) as a vendor's owner: "
                             f"{response.status_int}")
        assert wrong == [], "the plugin gate leaks:\n" + "\n".join(wrong)

    def test_standard_gate_opens_once_the_plugin_is_enabled(self, testapp, registry, accounts, db, enable_plugin):
        """The 404s above are the gate's, not the view's: the same routes reach their views once enabled."""
        self._info(registry)
        collection = [(r, m) for r, m in self._operations(registry, self._plugin_routes(registry))
                      if not _PLACEHOLDER.search(r.pattern)]
        if not collection:
            pytest.skip(f"{self.plugin} has no route without a placeholder")
        owner = accounts.vendor("Enabled")
        self._enable_with_requirements(registry, enable_plugin, owner)
        db.commit()
        wrong = []
        for route, method in collection:
            response = _call(testapp, _path(route), method, owner.headers)
            if response.status_int == 404 or response.status_int >= 500:
                wrong.append(f"{method} {_openapi_path(route)}: {response.status_int} {response.text[:120]}")
        assert wrong == [], "routes that stay closed with the plugin on:\n" + "\n".join(wrong)

    # -- (b) tenancy -------------------------------------------------------------------------

    def test_standard_tenancy_another_vendors_row_is_404(self, testapp, registry, accounts, db, enable_plugin):
        self._info(registry)
        bound = [(r, m) for r, m in self._operations(registry, self._plugin_routes(registry))
                 if getattr(r.factory, "model", None) is not None]
        if not bound:
            pytest.skip(f"{self.plugin} has no route bound to a model (add_route(..., model=…))")
        vendor_a, vendor_b = accounts.vendor("A"), accounts.vendor("B")
        for account in (vendor_a, vendor_b):
            self._enable_with_requirements(registry, enable_plugin, account)
        db.commit()

        wrong, walked, own_found = [], 0, []
        for route, method in bound:
            model = route.factory.model
            foreign = self.make_row(db, model, vendor_b)
            if foreign is None:
                continue
            db.commit()
            before = _snapshot(db, foreign)
            response = _call(testapp, route.generate({"id": str(foreign.id)}), method, vendor_a.headers)
            error = response.json.get("error", {}) if response.content_type == "application/json" else {}
            if response.status_int != 404 or error.get("code") != "not_found":
                wrong.append(f"{method} {_openapi_path(route)} for another vendor's row: {response.status_int}")
            if _snapshot(db, foreign) != before:
                wrong.append(f"{method} {_openapi_path(route)} changed another vendor's row")
            walked += 1
            if method == "GET":
                own = self.make_row(db, model, vendor_a)
                db.commit()
                own_found.append(_call(testapp, route.generate({"id": str(own.id)}), "GET",
                                       vendor_a.headers).status_int != 404)
        if not walked:
            pytest.skip("make_row built no row for any model-bound route")
        assert wrong == [], "tenancy leaks:\n" + "\n".join(wrong)
        # Not vacuous: the caller's own row is found on at least one of those routes.
        assert not own_found or any(own_found), "every GET is 404 even for the caller's own row"

    # -- (c) OpenAPI -------------------------------------------------------------------------

    def test_standard_openapi_documents_every_route_and_method(self, testapp, registry):
        self._info(registry)
        operations = self._operations(registry, self._plugin_routes(registry) + self._admin_routes(registry))
        if not operations:
            pytest.skip(f"{self.plugin} has no routes")
        document = testapp.get(f"{registry.settings['kloyst.api.prefix'].rstrip('/')}/openapi.json").json
        wrong = []
        for route, method in operations:
            operation = document["paths"].get(_openapi_path(route), {}).get(method.lower())
            if operation is None:
                wrong.append(f"{method} {_openapi_path(route)}: not in the document")
            elif not _declared_success(operation, document):
                wrong.append(f"{method} {_openapi_path(route)}: no declared success answer (response_schema=, "
                             f"openapi=…download(), or status=204): {operation.get('responses')}")
        assert wrong == [], "\n".join(wrong)

    # -- (d) migrations ----------------------------------------------------------------------

    @pytest.mark.parametrize("backend", _BACKENDS)
    def test_standard_migrations_downgrade_to_base_and_upgrade_again(self, request, registry, backend):
        from alembic import command
        from alembic.script import ScriptDirectory

        from kloyst.db import migrate

        info = self._info(registry)
        if backend not in self.migration_backends:
            pytest.skip(f"{self.plugin}: migration_backends leaves out {backend}")
        pm = registry["kloyst.plugin_manager"]
        engine, url, _ = _scratch_database(request, backend, pm)
        script = ScriptDirectory.from_config(migrate.alembic_config(pm, url))
        try:
            script.get_revisions(f"{self.plugin}@head")
        except Exception:  # alembic's CommandError / ResolutionError: no branch labelled with the plugin's name
            if getattr(info.module, "model_modules", ()):
                raise AssertionError(f"{self.plugin} has models but no migration branch labelled "
                                     f"{self.plugin!r}") from None
            pytest.skip(f"{self.plugin} has no tables and no migration branch")
        tables = _plugin_tables(info)
        before = set(sa_inspect(engine).get_table_names())
        assert tables and tables <= before, f"tables {sorted(tables - before)} are not created by the migrations"

        with engine.begin() as connection:
            command.downgrade(migrate.alembic_config(pm, url, connection), f"{self.plugin}@base")
        left = set(sa_inspect(engine).get_table_names())
        assert not tables & left, f"still there after downgrading {self.plugin}@base: {sorted(tables & left)}"
        assert "vendor" in left, "the core's tables must stay where they were"

        migrate.upgrade(pm, engine)
        assert set(sa_inspect(engine).get_table_names()) == before
        assert migrate.current(pm, engine) == migrate.heads(pm, engine)
        assert migrate.model_drift(pm, engine) == []

    # -- (e) metadata ------------------------------------------------------------------------

    def test_standard_metadata_compatible_and_requirements_installed(self, registry):
        from kloyst.plugins.manager import CORE_DISTRIBUTION
        from kloyst.version import __version__

        info = self._info(registry)
        pm = registry["kloyst.plugin_manager"]
        meta = info.meta
        if info.distribution == CORE_DISTRIBUTION:
            assert not meta.kloyst_versions or SpecifierSet(meta.kloyst_versions).contains(
                __version__, prereleases=True)
        else:
            assert meta.kloyst_versions, (f"{self.plugin}: say which Kloyst versions it is made for, "
                                          "PluginMeta(kloyst_versions='>=0.2,<0.3')")
            assert SpecifierSet(meta.kloyst_versions).contains(__version__, prereleases=True)
            if info.distribution:
                requirements = [Requirement(r) for r in importlib.metadata.requires(info.distribution) or ()]
                kloyst = [r for r in requirements if r.name.lower() == CORE_DISTRIBUTION and not r.marker]
                assert kloyst, f"{info.distribution}: install_requires must name kloyst"
                assert all(r.specifier.contains(__version__, prereleases=True) for r in kloyst)
        missing = [name for name in meta.requires if name not in pm.infos]
        assert missing == [], f"{self.plugin} requires {missing}, which are not installed"
        assert self.plugin not in meta.requires
