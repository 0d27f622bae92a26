"""Kloyst: a multi-tenant WhatsApp Business backend (Pyramid core, pluggy plugins)."""

from pathlib import Path

from setuptools import find_packages, setup

setup(
    name="kloyst",
    version="0.2.0",  # kloyst/version.py says the same (tests/unit/test_plugin_compatibility.py)
    description="Multi-tenant WhatsApp Business backend: contacts, campaigns, wallet, Meta Cloud API.",
    long_description=Path(__file__).with_name("README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["kloyst", "kloyst.*", "kloyst_plugins", "kloyst_plugins.*"]),
    include_package_data=True,
    package_data={"": ["*.mako", "*.ini", "*.md", "*.html", "*.csv"]},
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
                 "schemathesis>=4"],  # property-based API run against /v1/openapi.json
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
        ],
        "pytest11": ["kloyst = kloyst.testing.pytest_plugin"],
    },
)
