"""Merge strategies: what an import does with a row whose number the vendor already has.

A strategy is a pure function over decrypted values, so a plugin author writes a few lines
of Python and never touches SQL, encryption or locking; the import pipeline fetches the
existing contacts of a chunk in one query, calls ``merge`` per duplicate, and writes the
results in bulk. Strategies reach a vendor through the tenant hook
``kloyst_merge_strategies``: the built-ins below are registered by the contacts plugin
through that same hook.
"""

from __future__ import annotations

from dataclasses import replace

from kloyst.api import ContactFields, MergeStrategy, union_labels


def _skip(existing: ContactFields, incoming: ContactFields) -> None:
    return None


def _merge_labels(existing: ContactFields, incoming: ContactFields) -> ContactFields | None:
    labels = union_labels(existing.labels, incoming.labels)
    return None if labels == existing.labels else replace(existing, labels=labels)


def _update_metadata(existing: ContactFields, incoming: ContactFields) -> ContactFields | None:
    attributes = {**existing.attributes, **incoming.attributes}
    labels = union_labels(existing.labels, incoming.labels)
    if attributes == existing.attributes and labels == existing.labels:
        return None
    return replace(existing, attributes=attributes, labels=labels)


def _full_replace(existing: ContactFields, incoming: ContactFields) -> ContactFields | None:
    return None if incoming == existing else incoming


BUILT_IN = (
    MergeStrategy("SKIP_DUPLICATES", "Leave existing contacts exactly as they are.", _skip),
    MergeStrategy("MERGE_LABELS", "Add the row's labels to the existing contact; change nothing else.",
                  _merge_labels),
    MergeStrategy("UPDATE_METADATA", "Add the row's labels and overwrite the custom attributes it carries.",
                  _update_metadata),
    MergeStrategy("FULL_REPLACE", "Replace name, country, labels and attributes with the row's.", _full_replace,
                  reads_name=True),
)


def strategies_for(tenant_hooks) -> dict[str, MergeStrategy]:
    """The strategies a vendor may use: those of the plugins it has enabled."""
    offered: dict[str, MergeStrategy] = {}
    for result in tenant_hooks.kloyst_merge_strategies():
        for strategy in result or ():
            offered.setdefault(strategy.name, strategy)
    return offered
