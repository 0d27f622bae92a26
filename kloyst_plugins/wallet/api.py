"""The wallet plugin's public API: the ledger (holds, captures, releases) and the errors it raises.

A plugin that ``requires`` wallet imports from here and nowhere else in ``kloyst_plugins.wallet``;
everything else in the package may change without notice.
"""

from kloyst_plugins.wallet.ledger import (
    BalanceLimitExceeded,
    HoldExceeded,
    IdempotencyConflict,
    InsufficientFunds,
    Ledger,
    UnknownHold,
)

__all__ = [
    "BalanceLimitExceeded",
    "HoldExceeded",
    "IdempotencyConflict",
    "InsufficientFunds",
    "Ledger",
    "UnknownHold",
]
