"""The virus scan of every media file, uploaded or received: the same clamd and the same rule as imports.

Only clamd's ``stream: OK`` makes a file clean. An upload whose scan cannot be had (no
scanner configured, clamd down) is refused with 503 and nothing is kept — the vendor sends it
again — and an inbound media stays ``pending`` and is fetched and scanned again later.

``media.scan = off`` exists for ``make run`` with nothing installed but Python, as
``imports.scan = off`` does: only that word turns it on, every stored media then says
:data:`NOT_SCANNED`, and start-up is refused where anyone beyond this machine could reach the
API (:func:`kloyst.api.unscanned_exposure`). One difference, because the scanner's address is
shared with imports (``CLAMD_ADDRESS``): where a scanner is configured, media are scanned with
it even if ``media.scan`` says ``off``. A developer who turns scanning on for imports as
development.ini says (``IMPORTS_SCAN=required CLAMD_ADDRESS=…``) then scans media too, instead
of finding start-up refused over a setting they never touched; scanning more is never unsafe.
"""

from __future__ import annotations

import logging

from kloyst.api import Clamd, ConfigurationError, SCAN_OFF, unscanned_exposure, Verdict

log = logging.getLogger(__name__)

SCAN_BLOCK = 1024 * 1024  # bytes handed to clamd at a time (copies of the file stay this small)
NOT_SCANNED = "not scanned: media.scan = off (development only)"
CLEAN = "clean"


def is_off(settings) -> bool:
    """Whether media go unscanned: ``media.scan = off`` and no scanner configured (see the module)."""
    return settings["media.scan"] == SCAN_OFF and not settings["media.clamd_address"]


def check_settings(settings) -> None:
    """Refuse unscanned media wherever a file could come from beyond this machine (see the module)."""
    if not is_off(settings):
        return
    problems = unscanned_exposure(settings)
    if problems:
        raise ConfigurationError(
            "Kloyst cannot start: media.scan = off (MEDIA_SCAN) keeps WhatsApp media without a virus scan, which is "
            "for development on this machine only, but:\n  - " + "\n  - ".join(problems)
            + "\n  Set MEDIA_SCAN=required (and CLAMD_ADDRESS) to scan media.")


def announce(settings) -> None:
    if is_off(settings):
        log.warning("WHATSAPP MEDIA ARE NOT SCANNED for viruses: media.scan = off (development only, refused beyond "
                    "this machine). To scan: MEDIA_SCAN=required CLAMD_ADDRESS=tcp://127.0.0.1:3310")


def scan(settings, data: bytes | bytearray) -> Verdict | None:
    """clamd's verdict on ``data``; None when scanning is off. Raises ``ScannerUnavailable`` when none can be had."""
    if is_off(settings):
        return None
    view = memoryview(data)
    return Clamd(settings["media.clamd_address"]).scan(bytes(view[start:start + SCAN_BLOCK])
                                                       for start in range(0, len(view), SCAN_BLOCK))


def scan_result(verdict: Verdict | None) -> str:
    """What the media row records of the scan."""
    if verdict is None:
        return NOT_SCANNED
    return CLEAN if verdict.clean else verdict.reason[:255]
