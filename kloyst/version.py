"""Kloyst's version, on its own so that reading it imports nothing else (plugins check it at start-up).

Kloyst follows semantic versioning with the 0.x rule that a minor release may change the plugin API;
what changed, and what is deprecated before it goes, is in CHANGELOG.md.
"""

__version__ = "0.2.0"
