"""The layer contracts, read from the source: every import counts, function-level ones included.

- the core (``kloyst``) never imports a plugin;
- the core's modules import each other without a cycle;
- a plugin (first-party or third-party) imports the core only through :mod:`kloyst.api`;
- a plugin imports another plugin only through that plugin's ``api`` module, and only one it ``requires``;
- no module imports another module's private (underscore) name (of our own code: a library's private
  name is that library's business, and a pinned version's).
"""

import importlib

import pytest

from tests import architecture

MODULES = architecture.module_files()
IMPORTS = architecture.imports(MODULES)
PLUGIN_PACKAGES = ("kloyst_plugins", "kloyst_example")
OWN_PACKAGES = ("kloyst", *PLUGIN_PACKAGES)


def top(module: str) -> str:
    return module.split(".")[0]


def is_core(module: str) -> bool:
    return top(module) == "kloyst"


def plugin_of(module: str) -> str | None:
    """``contacts`` for ``kloyst_plugins.contacts.models``, ``kloyst_example`` for the example plugin."""
    parts = module.split(".")
    if parts[0] == "kloyst_plugins" and len(parts) > 1:
        return parts[1]
    if parts[0] == "kloyst_example":
        return "kloyst_example"
    return None


def plugin_api(plugin: str) -> str:
    return "kloyst_example.api" if plugin == "kloyst_example" else f"kloyst_plugins.{plugin}.api"


def requires(plugin: str) -> tuple[str, ...]:
    module = "kloyst_example.plugin" if plugin == "kloyst_example" else f"kloyst_plugins.{plugin}.plugin"
    return tuple(importlib.import_module(module).plugin_meta.requires)


def report(found: list) -> str:
    return "\n".join(sorted(found))


def test_the_core_never_imports_a_plugin():
    found = [f"{i.where()} imports {i.target}" for i in IMPORTS
             if is_core(i.importer) and top(i.target) in PLUGIN_PACKAGES]
    assert not found, "the core must not import a plugin:\n" + report(found)


def test_the_core_has_no_import_cycle():
    edges: dict[str, set[str]] = {}
    for i in IMPORTS:
        if i.runtime and is_core(i.importer) and is_core(i.target) and i.target in MODULES and i.target != i.importer:
            edges.setdefault(i.importer, set()).add(i.target)
    knots = architecture.cycles(edges)
    assert not knots, "core modules importing each other in a circle:\n" + "\n".join(" ↔ ".join(k) for k in knots)


def test_plugins_import_the_core_only_through_kloyst_api():
    found = [f"{i.where()} imports {i.target}" + (f".{i.name}" if i.name else "")
             for i in IMPORTS if plugin_of(i.importer) and is_core(i.target) and i.target != "kloyst.api"]
    assert not found, "a plugin imports the core through kloyst.api only:\n" + report(found)


def test_every_name_taken_from_kloyst_api_is_declared_in_its_all():
    api = importlib.import_module("kloyst.api")
    found = [f"{i.where()} takes {i.name}" for i in IMPORTS
             if i.target == "kloyst.api" and i.name and i.name not in api.__all__]
    assert not found, "names not in kloyst.api.__all__:\n" + report(found)


def test_a_plugin_imports_another_plugin_only_through_its_api_and_only_if_it_requires_it():
    found = []
    for i in IMPORTS:
        importer, imported = plugin_of(i.importer), plugin_of(i.target)
        if not importer or not imported or importer == imported:
            continue
        if i.target != plugin_api(imported):
            found.append(f"{i.where()} imports {i.target} (only {plugin_api(imported)} is public)")
        elif imported not in requires(importer):
            found.append(f"{i.where()} imports {i.target} but {importer} does not require {imported}")
    assert not found, "plugin boundaries crossed:\n" + report(found)


@pytest.mark.parametrize("plugin", sorted({plugin_of(m) for m in MODULES if plugin_of(m)}))
def test_a_plugin_api_module_exports_what_it_names(plugin):
    path = MODULES.get(plugin_api(plugin))
    if path is None:
        pytest.skip(f"{plugin} offers no api module")
    api = importlib.import_module(plugin_api(plugin))
    missing = [name for name in api.__all__ if not hasattr(api, name)]
    assert not missing


def test_no_module_imports_a_private_name_of_another():
    found = [f"{i.where()} takes {i.target}.{i.name}" for i in IMPORTS
             if i.name and i.name.startswith("_") and not i.name.startswith("__") and top(i.target) in OWN_PACKAGES]
    assert not found, "private names used outside their module:\n" + report(found)
