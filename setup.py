"""Kloyst: a multi-tenant WhatsApp Business backend (Pyramid core, pluggy plugins)."""

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def migration_packages() -> dict[str, str]:
    """Every alembic directory the wheel must carry, as ``{package: directory}``.

    The core's scripts stay at the top-level ``migrations/`` and are installed as ``kloyst.migrations``
    (kloyst.db.migrate looks there first, then beside the source tree); each plugin's
    ``kloyst_plugins/<p>/migrations/`` is installed in place. They hold no ``__init__.py``: they are
    listed here as (namespace) packages so that their ``.py`` files and data (``*.mako``) are shipped.
    """
    roots = {"kloyst.migrations": HERE / "migrations"}
    roots |= {f"kloyst_plugins.{d.parent.name}.migrations": d for d in sorted(HERE.glob("kloyst_plugins/*/migrations"))}
    packages = {}
    for package, root in roots.items():
        if not root.is_dir():  # the Dockerfile's dependency layer builds from setup.py alone
            continue
        for directory in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
            if directory.name != "__pycache__" and "__pycache__" not in directory.relative_to(root).parts:
                name = ".".join([package, *directory.relative_to(root).parts])
                packages[name] = directory.relative_to(HERE).as_posix()
    return packages


MIGRATION_PACKAGES = migration_packages()

setup(
    name="kloyst",
    version="0.2.0",  # kloyst/version.py says the same (tests/unit/test_plugin_compatibility.py)
    description="Multi-tenant WhatsApp Business backend: contacts, campaigns, wallet, Meta Cloud API.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["kloyst", "kloyst.*", "kloyst_plugins", "kloyst_plugins.*"])
    # data only: the development rate card's CSVs (pricing/snapshots.py); absent where the Dockerfile's
    # dependency layer builds from setup.py alone
    + (["kloyst_plugins.pricing.seed"] if (HERE / "kloyst_plugins" / "pricing" / "seed").is_dir() else [])
    + list(MIGRATION_PACKAGES),
    # kloyst.migrations <- migrations/ (and its versions/); the plugins' migrations map to where they are.
    package_dir={"kloyst.migrations": "migrations"},
    include_package_data=True,
    package_data={"": ["*.mako", "*.ini", "*.md", "*.html", "*.csv"],
                  # Every file of an alembic directory, not only its revisions (script.py.mako, READMEs).
                  **{package: ["*"] for package in MIGRATION_PACKAGES}},
    exclude_package_data={package: ["*.pyc", "*.pyo"] for package in MIGRATION_PACKAGES},
    install_requires=[
        "pyramid>=2.0",
        "pyramid_tm>=2.5",
        "waitress>=3.0",
        "zope.sqlalchemy>=3.0",
        "SQLAlchemy>=2.0",
        "alembic>=1.18.5",  # ScriptDirectory.get_heads(consider_depends_on=True)
        "psycopg2-binary>=2.9",
        "huey>=2.5",
        "redis>=5.0",
        "phonenumbers>=8.13",
        "cryptography>=42",
        "PyJWT>=2.8",
        "requests>=2.31",
        "openpyxl>=3.1",
        "defusedxml>=0.7",
        "python-calamine>=0.2",  # reads imported XLSX ~15x faster than openpyxl's read-only mode
        "pluggy>=1.5",
        "packaging>=23",  # PEP 440 version ranges: a plugin says which Kloyst versions it supports
        "argon2-cffi>=23.1",
        "pydantic>=2.6",
        "email-validator>=2.1",
        "fpdf2>=2.8",  # quotation PDFs: tables, embedded Noto fonts with fallbacks and color emoji (TTC, CBDT)
        "uharfbuzz>=0.39",  # HarfBuzz text shaping for fpdf2: Devanagari conjuncts, joined Arabic
        "babel>=2.12",  # CLDR currency symbols, minor units and country names on quotation PDFs
        "prometheus-client>=0.20",  # /metrics on the separate metrics listener (kloyst.metrics)
    ],
    extras_require={
        "test": ["pytest>=8", "pytest-xdist>=3.5", "WebTest>=3.0", "ruff>=0.5",
                 "pyyaml>=6", "jsonschema>=4.18",  # the sandbox test validates against Meta's OpenAPI
                 "pypdf>=4",  # quotation PDF tests read the text back
                 "pywa==4.5.0",  # a WhatsApp client nobody here wrote parses every sandbox webhook and answer
                 "schemathesis>=4",  # property-based API run against /v1/openapi.json
                 "mypy>=1.11", "types-waitress>=3.0", "types-jsonschema>=4.18",  # make test type-checks kloyst/
                 "pytest-cov>=6", "coverage>=7.10"],  # and prints coverage per package
    },
    entry_points={
        "console_scripts": ["kloyst = kloyst.cli:main"],
        "paste.app_factory": ["main = kloyst:main"],
        # First-party plugins are declared exactly as a third party declares its own.
        "kloyst.plugins": [
            "contacts = kloyst_plugins.contacts.plugin",
            "imports = kloyst_plugins.imports.plugin",
            "waba = kloyst_plugins.waba.plugin",
            "templates = kloyst_plugins.templates.plugin",
            "messages = kloyst_plugins.messages.plugin",
            "wallet = kloyst_plugins.wallet.plugin",
            "pricing = kloyst_plugins.pricing.plugin",
            "campaigns = kloyst_plugins.campaigns.plugin",
            "autoreplies = kloyst_plugins.autoreplies.plugin",
            "media = kloyst_plugins.media.plugin",
            "conversations = kloyst_plugins.conversations.plugin",
            "vendor_webhooks = kloyst_plugins.vendor_webhooks.plugin",
        ],
        "pytest11": ["kloyst = kloyst.testing.pytest_plugin"],
    },
)
