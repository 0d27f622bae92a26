"""The hook the ``example`` plugin offers other plugins: lines for its import note.

``plugin.py`` adds this spec through ``kloyst_addhooks``, so any installed plugin may implement
it (here: ``example_digest``). Its name starts ``kloyst_example_``, so it never clashes with a
Kloyst hook or another plugin's.
"""

from __future__ import annotations

from kloyst.api import hookspec


@hookspec
def kloyst_example_import_note(event):
    """Add lines to the note ``example`` writes when one of the vendor's imports completes.

    Called: by ``example`` while it handles an ``ImportCompleted`` event, only on the plugins the
    vendor has enabled (a tenant hook).
    Args:
        event: the :class:`kloyst.events.ImportCompleted` (``import_id``, ``created``, ``updated``,
            ``skipped``, ``failed``).
    Returns: a list of lines (strings), appended to the note in the order plugins were loaded.
    Not firstresult: every enabled plugin's lines are collected.
    """
