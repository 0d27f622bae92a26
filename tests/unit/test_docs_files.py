"""Every file the README, docs/*.md and the modules' docstrings name is in the repository.

A reader sent to ``docs/wallet.md`` or ``kloyst/outbox/reconcile.py`` must find it in their
clone. Paths are recognised by their first folder being one of the repository's (so ``text/csv``
and ``/etc/nginx`` are not paths of ours), markdown links by their target, and bare file names
(``benchmarks.md``) by a documentation or code extension; a bare name is found next to the
document, at the top of the repository, or anywhere in it. Files that exist only at run time
(``var/…``) or only on a server are listed in ``ELSEWHERE`` with the reason.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Top-level folders that are the repository's own (var/ and .venv/ are made at run time).
OWN_FOLDERS = frozenset({"kloyst", "kloyst_plugins", "docs", "tests", "bench", "docker", "nginx", "monitoring",
                         "examples", "migrations", "scripts", ".ci"})
BARE_EXTENSIONS = ("md", "py", "ini", "yml", "yaml", "toml", "cfg")
# Named on purpose, and not in any clone: why each is fine.
ELSEWHERE = {
    "docker/staging.env": "written on the server by every deploy; docker/staging.env.example is its template",
    "test_plugin.py": "docs/testing_plugins.md names it as the file name not to use",
    "args.ini": "docs/writing_plugins.md's `load(args.ini)`: the parsed argument, not a file",
}
_PATH = re.compile(r"(?<![\w./:@$-])((?:\.\./)*[\w.-]+/(?:[\w.-]+/)*[\w.-]*)")
_BARE = re.compile(r"(?<![\w./:@$-])([\w-]+(?:\.[\w-]+)*\.(?:" + "|".join(BARE_EXTENSIONS) + r"))\b(?![/\w])")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _every_file_name() -> set[str]:
    ignored = {".git", ".venv", "var", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis"}
    names = set()
    for path in ROOT.rglob("*"):
        if not ignored.intersection(path.relative_to(ROOT).parts) and not path.name.endswith(".egg-info"):
            names.add(path.name)
    return names


FILE_NAMES = _every_file_name()


def named_paths(text: str) -> list[str]:
    """The repository paths and bare file names ``text`` names (markdown link targets included)."""
    names = [target.split("#", 1)[0] for target in _LINK.findall(text)
             if not re.match(r"^(\w+:|#|/)", target) and target.split("#", 1)[0]]
    for token in _PATH.findall(text):
        token = token.rstrip(".,;:")
        first = token.lstrip("./").split("/", 1)[0] if not token.startswith("../") else ".."
        if first in OWN_FOLDERS or token.startswith("../"):
            names.append(token)
    names += [name for name in _BARE.findall(text) if "/" not in name]
    return list(dict.fromkeys(names))


def missing(names: list[str], base: Path) -> list[str]:
    """Which of ``names`` (as written in a file under ``base``) are not in the repository."""
    absent = []
    for name in dict.fromkeys(names):
        if name in ELSEWHERE:
            continue
        candidates = [base / name, ROOT / name]
        if "/" not in name and name in FILE_NAMES:
            continue
        if not any(candidate.exists() for candidate in candidates):
            absent.append(name)
    return absent


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def modules() -> list[Path]:
    return sorted(path for folder in ("kloyst", "kloyst_plugins") for path in (ROOT / folder).rglob("*.py")
                  if "__pycache__" not in path.parts)


@pytest.mark.parametrize("path", documents(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_file_a_document_names_is_in_the_repository(path):
    absent = missing(named_paths(path.read_text(encoding="utf-8")), path.parent)
    assert absent == [], f"{path.relative_to(ROOT)} names files that are not in the repository: {absent}"


def test_every_file_a_module_docstring_names_is_in_the_repository():
    absent = {}
    for path in modules():
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        if found := missing(named_paths(docstring), path.parent):
            absent[path.relative_to(ROOT).as_posix()] = found
    assert absent == {}, f"module docstrings name files that are not in the repository: {absent}"


def test_the_scan_finds_paths_links_and_bare_names_and_skips_what_is_not_ours():
    text = ("See [the wallet](wallet.md), `kloyst/outbox/reconcile.py`, docs/benchmarks.md and NOTES.md; "
            "answers text/csv, reads /etc/nginx/nginx.conf, serves http://127.0.0.1:6543/v1/docs.")
    assert named_paths(text) == ["wallet.md", "kloyst/outbox/reconcile.py", "docs/benchmarks.md", "NOTES.md"]
    assert missing(named_paths(text), ROOT / "docs") == ["NOTES.md"]
