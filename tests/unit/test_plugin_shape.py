"""Every first-party plugin, and the example, has the one plugin layout of docs/writing_plugins.md.

The rule ("Plugin layout", also in ``kloyst_plugins/__init__.py``):

- required: ``__init__.py`` and ``plugin.py``; ``views.py`` when the plugin has routes
  (``kloyst_routes``); ``models.py`` and ``migrations/versions/`` together when it has tables;
- optional: ``api.py``, ``schemas.py``, ``services.py``, ``tasks.py``, ``cli.py``, ``webhooks.py``,
  ``views_admin.py`` and any module named after what it does, but no other ``views_*.py``, no
  ``routes.py``/``urls.py``, no catch-all ``utils.py``-style names, no sub-package but ``migrations/``;
- routes are registered in one place: ``kloyst_routes`` includes ``.views`` only, every
  ``add_route``/``add_view`` is in ``views.py`` (or ``views_admin.py``, which ``views.py`` includes),
  and nothing uses ``@view_config`` or ``config.scan``.

A second plugin small enough for one module (``<something>_plugin.py``, the example's digest)
keeps its hooks and routes in that module.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIRST_PARTY = {path.parent.name: path.parent for path in sorted((ROOT / "kloyst_plugins").glob("*/plugin.py"))}
PACKAGES = {**FIRST_PARTY, "example": ROOT / "examples" / "kloyst-example-plugin" / "kloyst_example"}
DOTTED = {**{name: f"kloyst_plugins.{name}" for name in FIRST_PARTY}, "example": "kloyst_example"}

OPTIONAL = {"api.py", "schemas.py", "services.py", "tasks.py", "cli.py", "webhooks.py", "views_admin.py"}
FORBIDDEN = {"routes.py", "urls.py", "utils.py", "util.py", "helpers.py", "common.py", "misc.py"}
VIEW_MODULES = {"views.py", "views_admin.py"}
REGISTRATION = {"add_route", "add_admin_route", "add_view"}


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _function(tree: ast.Module, name: str) -> ast.FunctionDef | None:
    return next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)


def _calls(node: ast.AST, attribute: str) -> list[ast.Call]:
    return [n for n in ast.walk(node)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == attribute]


def _included(node: ast.AST) -> list:
    return [c.args[0].value if c.args and isinstance(c.args[0], ast.Constant) else ast.unparse(c)
            for c in _calls(node, "include")]


def _second_plugin(path: Path) -> bool:
    return path.name.endswith("_plugin.py")


def _modules(package: Path) -> list[Path]:
    return sorted(package.glob("*.py"))


def test_the_plugins_to_check_are_found():
    assert set(FIRST_PARTY) == {"autoreplies", "campaigns", "contacts", "conversations", "imports", "media",
                                "messages", "pricing", "templates", "vendor_webhooks", "waba", "wallet"}
    assert (PACKAGES["example"] / "plugin.py").is_file()


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_required_files_are_there(name):
    package = PACKAGES[name]
    plugin = _tree(package / "plugin.py")
    assert (package / "__init__.py").is_file()
    assert ast.get_docstring(_tree(package / "__init__.py")), f"{name}/__init__.py: say what the plugin is for"
    has_routes = _function(plugin, "kloyst_routes") is not None
    assert (package / "views.py").is_file() == has_routes, f"{name}: views.py exactly when it has kloyst_routes"
    revisions = sorted((package / "migrations" / "versions").glob("*.py"))
    assert (package / "models.py").is_file() == bool(revisions), f"{name}: models.py and migrations/ go together"
    if revisions:
        assert f"model_modules = (\"{DOTTED[name]}.models\",)" in (package / "plugin.py").read_text()
        labels = [r for r in revisions if re.search(rf"^branch_labels = \(['\"]{name}['\"],?\)", r.read_text(), re.M)]
        assert len(labels) == 1, f"{name}: one revision starts the branch labelled {name!r}"


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_no_module_outside_the_documented_list(name):
    package = PACKAGES[name]
    wrong = [m.name for m in _modules(package)
             if m.name in FORBIDDEN or (m.name.startswith("views_") and m.name not in OPTIONAL)]
    assert wrong == [], f"{name}: {wrong} are not in the plugin layout (docs/writing_plugins.md)"
    subpackages = [d.name for d in sorted(package.iterdir())
                   if d.is_dir() and d.name not in ("migrations", "__pycache__") and any(d.rglob("*.py"))]
    assert subpackages == [], f"{name}: sub-packages {subpackages}; only migrations/ (and data directories)"


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_routes_are_registered_in_views_only(name):
    package = PACKAGES[name]
    routes_hook = _function(_tree(package / "plugin.py"), "kloyst_routes")
    if routes_hook is not None:
        assert _included(routes_hook) == [".views"], f"{name}: kloyst_routes includes .views and nothing else"
    for module in _modules(package):
        tree = _tree(module)
        assert "view_config" not in {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | {
            a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}, \
            f"{name}/{module.name}: register views with config.add_view, not @view_config"
        scans = [c for c in _calls(tree, "scan") if isinstance(c.func.value, ast.Name) and c.func.value.id == "config"]
        assert scans == [], f"{name}/{module.name}: no config.scan; views.py registers every view"
        if module.name in VIEW_MODULES or _second_plugin(module):
            continue
        found = sorted({c.func.attr for c in ast.walk(tree) if isinstance(c, ast.Call)
                        and isinstance(c.func, ast.Attribute) and c.func.attr in REGISTRATION})
        assert found == [], f"{name}/{module.name} calls {found}: routes and views are registered in views.py"
        assert ".views_admin" not in _included(tree), f"{name}/{module.name}: views.py includes .views_admin"
    if (package / "views_admin.py").is_file():
        includeme = _function(_tree(package / "views.py"), "includeme")
        assert includeme is not None and ".views_admin" in _included(includeme), \
            f"{name}: views.py's includeme includes .views_admin"


@pytest.mark.parametrize("name", sorted(PACKAGES))
def test_only_plugin_modules_import_hookimpl(name):
    importers = [m.name for m in _modules(PACKAGES[name]) if m.name != "plugin.py" and not _second_plugin(m)
                 and "hookimpl" in {a.name for n in ast.walk(_tree(m)) if isinstance(n, ast.ImportFrom)
                                    for a in n.names}]
    assert importers == [], f"{name}: only plugin.py implements hooks, not {importers}"
