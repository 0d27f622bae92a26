"""Kloyst's wheel carries every migration: installed from it alone, `kloyst db upgrade` builds a fresh database.

The wheel is built once for the module from a copy of the sources (so no stale ``build/`` of the
checkout leaks in), installed with ``--no-deps`` into a fresh virtualenv, and run from a directory
outside the checkout. The virtualenv gets its dependencies from the test's own interpreter (a
``.pth`` file adding a view of its site-packages) minus every Kloyst distribution and every
editable finder, so the checkout cannot shadow the wheel: the test asserts that the modules and
the migration directories Kloyst uses are the installed ones.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import uuid
import zipfile
from pathlib import Path

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from deploy_support import ROOT

from kloyst import testing
from kloyst.version import __version__

SOURCES = ("setup.py", "pyproject.toml", "README.md", "kloyst", "kloyst_plugins", "migrations")
EXAMPLE = ROOT / "examples" / "kloyst-example-plugin"
FIRST_PARTY = ("contacts", "imports", "waba", "templates", "messages", "wallet", "pricing", "campaigns", "media",
               "conversations", "autoreplies", "vendor_webhooks")
LEFT_OUT = ("kloyst", "__editable__", "_kloyst")  # the checkout's own installs (kloyst, the example plugin)


def _run(*args, cwd: Path, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    done = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def _build_wheel(source: Path, names, out: Path) -> Path:
    """Build the wheel of a clean copy of ``names`` under ``source`` (setuptools as pinned, no network)."""
    copy = out / f"src-{source.name}"
    for name in names:
        if (source / name).is_dir():
            shutil.copytree(source / name, copy / name,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build"))
        else:
            copy.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, copy / name)
    dist = out / f"dist-{source.name}"
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
         "--wheel-dir", dist, copy, cwd=out)
    (wheel,) = dist.glob("*.whl")
    return wheel


def _make_venv(path: Path, wheels: list[Path]) -> Path:
    """A virtualenv with ``wheels`` installed (not editable) and the test interpreter's other packages."""
    _run(sys.executable, "-m", "venv", "--without-pip", path, cwd=path.parent)
    python = path / "bin" / "python"
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", "--no-index",
         *wheels, cwd=path.parent)
    deps = path / "deps"  # the dependencies: a view of our site-packages without Kloyst's own installs
    deps.mkdir()
    for site in dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]):
        for entry in Path(site).iterdir():
            if not entry.name.startswith(LEFT_OUT) and not (deps / entry.name).exists():
                (deps / entry.name).symlink_to(entry)
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # addsitedir, so the dependencies' own .pth files (namespace packages) are processed too.
    (Path(purelib) / "zz_test_dependencies.pth").write_text(f"import site; site.addsitedir({str(deps)!r})\n")
    return path


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wheel")


@pytest.fixture(scope="module")
def wheel(build) -> Path:
    return _build_wheel(ROOT, SOURCES, build)


@pytest.fixture(scope="module")
def venv(build, wheel) -> Path:
    return _make_venv(build / "venv", [wheel])


def _env(**variables: str) -> dict[str, str]:
    """A minimal environment with nothing pointing back at the checkout."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/"), **variables}


def _expected_heads(version_dirs: list[Path]) -> set[str]:
    """The heads of the core and the given branches, read from the checkout's revision files."""
    cfg = Config()
    cfg.set_main_option("script_location", str(ROOT / "migrations"))
    cfg.set_main_option("version_locations", " ".join(str(d) for d in [ROOT / "migrations" / "versions",
                                                                         *version_dirs]))
    cfg.set_main_option("path_separator", "space")
    return set(ScriptDirectory.from_config(cfg).get_heads(consider_depends_on=True))


FIRST_PARTY_HEADS = _expected_heads([ROOT / "kloyst_plugins" / p / "migrations" / "versions" for p in FIRST_PARTY])


def _listed(output: str, label: str) -> set[str]:
    line = next(line for line in output.splitlines() if line.startswith(label))
    return {revision.strip() for revision in line[len(label):].split(",") if revision.strip()}


# Run by the virtualenv's python after `kloyst db upgrade`: `kloyst db current` and `kloyst db check` through
# the installed CLI's main() (one process: each start of Kloyst costs seconds), and where everything came from.
AFTERWARDS = """
import contextlib, io, json, sys
import kloyst, kloyst_plugins
from kloyst.cli import main
from kloyst.db import migrate
from kloyst.plugins import build_plugin_manager

answers = {}
for action in ("current", "check"):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(["db", action, sys.argv[1]])
    answers[action] = (status, out.getvalue())
pm = build_plugin_manager()
answers["files"] = {"kloyst": kloyst.__file__, "kloyst_plugins": kloyst_plugins.__file__,
                    "core": str(migrate.MIGRATIONS)}
answers["dirs"] = {name: str(directory) for name, directory in migrate.migration_dirs(pm)}
answers["installed"] = sorted(pm.infos)
print(json.dumps(answers))
"""


def _upgrade_current_check(venv: Path, workdir: Path, env: dict[str, str], heads: set[str]) -> dict:
    """``kloyst db upgrade`` (the console script), then ``current`` and ``check``: all at ``heads``."""
    upgraded = _run(venv / "bin" / "kloyst", "db", "upgrade", "development.ini", cwd=workdir, env=env)
    assert _listed(upgraded.stdout, "database at") == heads
    answers = json.loads(_run(venv / "bin" / "python", "-c", AFTERWARDS, "development.ini",
                              cwd=workdir, env=env).stdout.splitlines()[-1])
    status, current = answers["current"]
    assert status == 0 and _listed(current, "current:") == _listed(current, "heads:") == heads, current
    status, check = answers["check"]
    assert status == 0 and "up to date and matches the models" in check, check
    return answers


@pytest.fixture(scope="module")
def sqlite_run(venv, tmp_path_factory) -> dict:
    """development.ini as it is (SQLite under var/ beside the ini), in a directory far from the checkout."""
    workdir = tmp_path_factory.mktemp("sqlite")
    shutil.copy(ROOT / "development.ini", workdir / "development.ini")
    answers = _upgrade_current_check(venv, workdir, _env(), FIRST_PARTY_HEADS)
    assert (workdir / "var" / "kloyst.sqlite").is_file()
    return answers


def test_the_wheel_carries_the_cores_and_every_plugins_migrations_and_data(wheel):
    assert wheel.name == f"kloyst-{__version__}-py3-none-any.whl"
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {"kloyst/migrations/env.py", "kloyst/migrations/script.py.mako"}
    expected |= {f"kloyst/migrations/versions/{f.name}" for f in (ROOT / "migrations" / "versions").glob("*.py")}
    for name in FIRST_PARTY:
        migrations = ROOT / "kloyst_plugins" / name / "migrations"
        files = [f for f in migrations.rglob("*") if f.is_file() and "__pycache__" not in f.parts]
        assert any(f.suffix == ".py" for f in files), name
        expected |= {f.relative_to(ROOT).as_posix() for f in files}
    # Every other file of the packages too (the pricing seed, the templates), compiled files aside.
    for package in ("kloyst", "kloyst_plugins"):
        expected |= {f.relative_to(ROOT).as_posix() for f in (ROOT / package).rglob("*")
                     if f.is_file() and "__pycache__" not in f.parts and f.suffix not in (".pyc", ".pyo")}
    assert sorted(expected - names) == []
    assert [n for n in names if "__pycache__" in n or n.endswith(".pyc")] == []


def test_kloyst_db_upgrade_from_the_wheel_builds_a_fresh_sqlite_database(sqlite_run):
    assert sqlite_run["installed"] == sorted({"core", *FIRST_PARTY})


def test_what_ran_is_the_installed_wheel_with_its_migrations_inside_it(venv, sqlite_run):
    site = (venv / "lib").resolve()
    for key, file in sqlite_run["files"].items():
        assert Path(file).resolve().is_relative_to(site), f"{key} comes from {file}, not from the wheel"
    assert (Path(sqlite_run["files"]["core"]) / "env.py").is_file()
    assert sorted(sqlite_run["dirs"]) == sorted(FIRST_PARTY)
    for name, directory in sqlite_run["dirs"].items():
        assert Path(directory).resolve().is_relative_to(site) and Path(directory).is_dir(), (name, directory)


def test_kloyst_db_upgrade_from_the_wheel_builds_a_fresh_postgresql_database(venv, tmp_path):
    shutil.copy(ROOT / "development.ini", tmp_path / "development.ini")
    name = f"kloyst_wheel_{uuid.uuid4().hex[:10]}"
    url = testing.create_database(name)
    try:
        _upgrade_current_check(venv, tmp_path, _env(DATABASE_URL=url), FIRST_PARTY_HEADS)
    finally:
        testing.drop_database(name)


def test_a_third_party_plugins_wheel_carries_its_branch_and_kloyst_applies_it_without_a_hook(build, wheel, tmp_path):
    example = _build_wheel(EXAMPLE, ("setup.py", "kloyst_example"), build)
    assert "kloyst_example/migrations/versions/ex_0001_notes_and_event_log.py" in zipfile.ZipFile(example).namelist()
    venv = _make_venv(build / "venv-example", [wheel, example])
    heads = _expected_heads([*(ROOT / "kloyst_plugins").glob("*/migrations/versions"),
                             EXAMPLE / "kloyst_example" / "migrations" / "versions"])
    assert "ex_0001" in heads
    shutil.copy(ROOT / "development.ini", tmp_path / "development.ini")
    answers = _upgrade_current_check(venv, tmp_path, _env(), heads)
    assert Path(answers["dirs"]["example"]).resolve().is_relative_to((venv / "lib").resolve())
