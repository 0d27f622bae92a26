"""The wallet's scrape-time gauges: money held for queued work, and holds that stay open.

A hold reserves a campaign's money until its messages are sent (captured) or given up
(released); one that stays open long after its campaign ended is money the vendor cannot
spend. Both reads are small: ``wallet`` has one row per vendor, ``wallet_hold`` one per
campaign launch. Amounts are exported in currency units (micros / 1,000,000), per currency.
"""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import text

from kloyst.api import DatabaseCollector, MICROS, seconds_since, utcnow

_WALLETS = text("SELECT currency, sum(held_micros), sum(balance_micros) FROM wallet GROUP BY currency")
_OPEN_HOLDS = text("""
SELECT w.currency, count(*), min(h.created_at)
  FROM wallet_hold h JOIN wallet w ON w.vendor_id = h.vendor_id
 WHERE h.captured_micros + h.released_micros < h.amount_micros
 GROUP BY w.currency
""")


class WalletGauges(DatabaseCollector):
    name = "wallet holds"
    min_interval = 30.0

    def families(self) -> list:
        return [
            GaugeMetricFamily("kloyst_wallet_held", "Money held for queued work across all wallets, in currency "
                              "units (Σ wallet.held_micros / 1e6).", labels=["currency"]),
            GaugeMetricFamily("kloyst_wallet_balance", "Money in all wallets, held part included, in currency units.",
                              labels=["currency"]),
            GaugeMetricFamily("kloyst_wallet_open_holds", "Holds with money still outstanding (neither captured nor "
                              "released).", labels=["currency"]),
            GaugeMetricFamily("kloyst_wallet_oldest_open_hold_age_seconds", "Age of the oldest hold with money still "
                              "outstanding; 0 when none is open.", labels=["currency"]),
        ]

    def measure(self, conn) -> list:
        now = utcnow()
        wallets = {currency: (held, balance) for currency, held, balance in conn.execute(_WALLETS)}
        holds = {currency: (count, first) for currency, count, first in conn.execute(_OPEN_HOLDS)}
        held, balance, open_holds, oldest = self.families()
        for currency in sorted(wallets.keys() | holds.keys()):
            held_micros, balance_micros = wallets.get(currency, (0, 0))
            count, first = holds.get(currency, (0, None))
            held.add_metric([currency], int(held_micros or 0) / MICROS)
            balance.add_metric([currency], int(balance_micros or 0) / MICROS)
            open_holds.add_metric([currency], float(count))
            oldest.add_metric([currency], seconds_since(first, now))
        return [held, balance, open_holds, oldest]
