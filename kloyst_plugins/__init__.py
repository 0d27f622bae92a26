"""Kloyst's first-party plugins.

Each is declared in setup.py under the ``kloyst.plugins`` entry-point group, exactly as a
third party declares its own, and each package has the same shape: ``plugin.py``
(metadata and hook implementations), ``models.py``, ``services.py``, ``views.py``,
``tasks.py`` and ``migrations/versions/``.
"""
