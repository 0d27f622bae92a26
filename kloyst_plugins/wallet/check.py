"""The wallet check on a timer, and its result as gauges an alert pages on (docs/wallet.md, docs/operations.md).

``kloyst wallet check`` (cli.py) finds every disagreement between the wallets and their ledger
(:func:`kloyst_plugins.wallet.audit.invariant_violations`), but only when someone runs it. Every
OUTBOX process (ALL on the embedded default) runs the same check every
``wallet.check_interval_seconds`` (an hour), logs each disagreement, and exports what it found:

* ``kloyst_wallet_check_violations`` — disagreements the last check found (KloystWalletCheckFailing
  pages on any);
* ``kloyst_wallet_check_last_success_timestamp_seconds`` — when a check last finished
  (KloystWalletCheckNotRunning warns when that is long ago: a check that fails to finish, say on a
  statement timeout, is no check).

Nothing is exported before the first check has finished, a minute after start-up. The check only
reads (each of its statements sees one snapshot, so money moving meanwhile is no disagreement),
in a read-only transaction that on SQLite takes no write lock. :class:`WalletCheck` runs it and is the
collector of its result, one per application (:meth:`WalletCheck.of`); :func:`service` is its timer.
"""

from __future__ import annotations

import logging
import time

from prometheus_client.core import GaugeMetricFamily

from kloyst.api import Periodic, read_only_connection, Setting
from kloyst_plugins.wallet.audit import invariant_violations

log = logging.getLogger(__name__)

INTERVAL = Setting(
    "wallet.check_interval_seconds", "WALLET_CHECK_INTERVAL_SECONDS", 3600.0, float,
    help="How often every OUTBOX process (ALL on the embedded default) checks every wallet against its ledger and "
         "exports the result for alerting; 0 turns it off (then run `kloyst wallet check` from cron).")
LOGGED = 20  # disagreements logged per check; the count says how many there are
_REGISTRY_KEY = "wallet.check"


def service(registry) -> Periodic:
    """The check on its timer (``wallet.check_interval_seconds``), for ``kloyst_background_services``."""
    return Periodic("wallet-check", registry.settings[INTERVAL.key], WalletCheck.of(registry).run_once)


class WalletCheck:
    """The wallet check of this process, and the collector of its last result (its gauges)."""

    @classmethod
    def of(cls, registry) -> WalletCheck:
        """This application's check (made on first use): the metrics hook and the service hook share it."""
        check = registry.get(_REGISTRY_KEY)
        if check is None:
            check = registry[_REGISTRY_KEY] = cls(registry)
        return check

    def __init__(self, registry) -> None:
        self.registry = registry  # made while the application is configured: its engine comes later
        self._result: tuple[int, float] | None = None  # (violations, when the check finished: time.time())

    # -- the check -----------------------------------------------------------------------------

    def run_once(self) -> list[str]:
        """Check every wallet now; the disagreements (also logged, and exported from now on)."""
        with read_only_connection(self.registry["kloyst.engine"]) as connection:
            problems = invariant_violations(connection)
        for problem in problems[:LOGGED]:
            log.error("wallet check: %s", problem)
        if problems:
            log.error("wallet check: %s disagreement(s) between wallets and their ledger", len(problems))
        self._result = (len(problems), time.time())
        return problems

    # -- the collector ---------------------------------------------------------------------------

    def describe(self) -> list:
        return self._families()

    def collect(self) -> list:
        violations, timestamp = self._families()
        if self._result is not None:
            violations.add_metric([], float(self._result[0]))
            timestamp.add_metric([], self._result[1])
        return [violations, timestamp]

    @staticmethod
    def _families() -> list:
        return [
            GaugeMetricFamily("kloyst_wallet_check_violations", "Disagreements between wallets and their ledger "
                              "found by the last wallet check (0: every wallet agrees)."),
            GaugeMetricFamily("kloyst_wallet_check_last_success_timestamp_seconds", "When the last wallet check "
                              "finished (Unix time)."),
        ]
