"""kloyst-example-plugin: a third-party Kloyst plugin, packaged exactly as an outsider would package one.

It ships two plugins from one distribution: ``example`` (notes, a task, a migration
branch, a setting, a tenant hook) and ``example_digest``, which requires ``example``.
"""

from setuptools import find_namespace_packages, setup

setup(
    name="kloyst-example-plugin",
    version="0.3.0",
    description="Worked example of a Kloyst plugin: tenant-scoped notes, a task, a migration branch.",
    python_requires=">=3.11",
    # kloyst_example/migrations/versions/ holds the alembic revisions and no __init__.py: found as
    # namespace packages, its revisions are shipped in the wheel beside plugin.py, where Kloyst looks
    # for them (<plugin module's directory>/migrations/versions), and so is any other file of theirs.
    packages=find_namespace_packages(include=["kloyst_example", "kloyst_example.*"], exclude=["*.__pycache__"]),
    package_data={"kloyst_example.migrations": ["*"], "kloyst_example.migrations.versions": ["*"]},
    exclude_package_data={"": ["*.pyc"]},
    # The same range as its PluginMeta.kloyst_versions: pip and Kloyst's start-up agree on it.
    install_requires=["kloyst>=0.2,<0.3"],
    entry_points={
        "kloyst.plugins": [
            "example = kloyst_example.plugin",
            "example_digest = kloyst_example.digest_plugin",
        ],
    },
)
