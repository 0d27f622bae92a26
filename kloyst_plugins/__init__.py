"""Kloyst's first-party plugins.

Each is declared in setup.py under the ``kloyst.plugins`` entry-point group, exactly as a
third party declares its own, and each package has the one plugin layout of
docs/writing_plugins.md ("Plugin layout"), checked by tests/unit/test_plugin_shape.py:

Required (left out only when there is nothing to put in them: no tables means no
``models.py`` and no ``migrations/``, no HTTP API means no ``views.py``; never an empty file):

- ``__init__.py``: a docstring saying what the plugin is for;
- ``plugin.py``: ``plugin_meta``, ``model_modules`` and the hook implementations (the only
  module that imports ``hookimpl``);
- ``views.py``: every route and view, registered in ``includeme(config)`` with
  ``add_route``/``add_view``; ``kloyst_routes`` is ``config.include(".views")`` and nothing else;
- ``models.py``: the plugin's tables;
- ``migrations/versions/``: the plugin's alembic branch, labelled with its name.

Optional: ``api.py`` (what other plugins may import), ``schemas.py`` (request and answer
schemas), ``services.py`` (domain rules shared by views, tasks and the CLI), ``tasks.py``
(background tasks), ``cli.py`` (``kloyst`` subcommands), ``webhooks.py`` (Meta webhook
handlers), ``views_admin.py`` (platform-admin routes, included from ``views.py``'s
``includeme``), and any other module named after the one thing it does (``phones.py``,
``ledger.py``). Not allowed: other ``views_*`` modules, modules named ``routes`` or ``urls``,
catch-all names (``utils``, ``helpers``, ``common``, ``misc``) and sub-packages other than
``migrations/`` (data directories without Python files are fine).
"""
