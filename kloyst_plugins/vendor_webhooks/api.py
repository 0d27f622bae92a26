"""The vendor webhooks plugin's public API: checking a delivery's signature as a receiver does.

A receiver written in Python (a vendor's, or a test's) calls :func:`verify_signature` with the
endpoint's secret, the ``Kloyst-Signature`` header and the raw body.
"""

from kloyst_plugins.vendor_webhooks.signatures import (
    DEFAULT_TOLERANCE_SECONDS,
    HEADER as SIGNATURE_HEADER,
    sign,
    SignatureError,
    verify_signature,
)

__all__ = ["DEFAULT_TOLERANCE_SECONDS", "sign", "SIGNATURE_HEADER", "SignatureError", "verify_signature"]
