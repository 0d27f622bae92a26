"""Whether uploads are scanned: always, unless a developer's own machine explicitly says ``off``.

The rule everywhere is ``imports.scan = required`` (the default): a file is parsed only after
clamd answered ``stream: OK`` for it, and while clamd cannot be asked the upload waits
(:mod:`.tasks`). A file is never treated as clean without an answer.

``imports.scan = off`` exists so that ``make run`` can import a contact list with nothing
installed but Python (development.ini sets it). Skipping the scan is only acceptable where
the only person who can upload is the developer at this machine, so the mode is:

* **explicit** — only the word ``off`` (in the ini file or ``IMPORTS_SCAN``) turns it on; any
  word other than ``required`` or ``off`` stops start-up instead of being guessed at;
* **loud** — ``kloyst run`` logs a warning when it starts, and every upload's answer, every
  job's record and ``kloyst import`` say :data:`NOT_SCANNED`;
* **confined** — start-up is refused (:func:`check_settings`) when anyone beyond this machine
  could reach the API: it listens on an address that is not loopback, its public URL is not
  a loopback URL, or it trusts a proxy that is not on this machine. staging.ini (0.0.0.0,
  a public URL) can therefore never run with it. A configured scanner address is refused too:
  "scan off" beside "scan with this clamd" is a contradiction, not a preference.
"""

from __future__ import annotations

import logging

from kloyst.api import as_scan_mode as as_scan_mode  # the setting's parser, shared with every scanning plugin
from kloyst.api import ConfigurationError, unscanned_exposure

log = logging.getLogger(__name__)

REQUIRED = "required"
OFF = "off"
NOT_SCANNED = "not scanned: imports.scan = off (development only)"


def is_off(settings) -> bool:
    return settings["imports.scan"] == OFF


def check_settings(settings) -> None:
    """Refuse ``imports.scan = off`` wherever an upload could come from beyond this machine (see the module)."""
    if not is_off(settings):
        return
    problems = unscanned_exposure(settings)
    address = settings["imports.clamd_address"]
    if address:
        problems.append(f"a scanner is configured ({address}, imports.clamd_address / CLAMD_ADDRESS): set "
                        "IMPORTS_SCAN=required to scan with it")
    if problems:
        raise ConfigurationError(
            "Kloyst cannot start: imports.scan = off (IMPORTS_SCAN) imports uploads without a virus scan, which is "
            "for development on this machine only, but:\n  - " + "\n  - ".join(problems)
            + "\n  Set IMPORTS_SCAN=required (and CLAMD_ADDRESS) to scan uploads.")


def announce(settings) -> None:
    """The start-up warning of a process that will import unscanned files (nothing when scanning is required)."""
    if is_off(settings):
        log.warning("UPLOADS ARE NOT SCANNED for viruses: imports.scan = off (development only, refused beyond "
                    "this machine). Every import says %r. To scan: IMPORTS_SCAN=required "
                    "CLAMD_ADDRESS=tcp://127.0.0.1:3310", NOT_SCANNED)
