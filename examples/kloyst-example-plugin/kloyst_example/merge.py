"""A merge strategy from a third-party plugin: when an import meets a number the vendor has, keep the longer name.

``plugin.py`` offers it through the ``kloyst_merge_strategies`` tenant hook as ``KEEP_LONGER_NAME``,
so only vendors that enabled ``example`` can choose it in an import's mapping. It is pure Python
over decrypted values: the import does the SQL, locking, encryption and audit in bulk.
"""

from __future__ import annotations

from dataclasses import replace

from kloyst.api import ContactFields, union_labels


def keep_longer_name(existing: ContactFields, incoming: ContactFields) -> ContactFields | None:
    """The longer of the two names wins ("Asha" → "Asha Rao"); labels are added; nothing else changes."""
    name = existing.name
    if incoming.name and len(incoming.name) > len(existing.name or ""):
        name = incoming.name
    merged = replace(existing, name=name, labels=union_labels(existing.labels, incoming.labels))
    return None if merged == existing else merged
