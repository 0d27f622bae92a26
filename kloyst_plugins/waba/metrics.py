"""The waba plugin's scrape-time gauge: the vendors' phone numbers by Meta's quality rating and status.

A number Meta rates RED (or FLAGGED) is one campaign away from a lower messaging limit or a
restriction, and Meta tells Kloyst by webhook (``phone_number_quality_update``), not the vendor:
the gauge lets an alert page someone. ``phone_number`` holds a handful of rows per vendor, read at
most once a minute.
"""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import text

from kloyst.api import DatabaseCollector

_BY_QUALITY = text("SELECT quality_rating, status, count(*) FROM phone_number GROUP BY quality_rating, status")


class PhoneNumberQuality(DatabaseCollector):
    name = "phone number quality"
    min_interval = 60.0

    def families(self) -> list:
        return [GaugeMetricFamily("kloyst_phone_numbers", "The vendors' WhatsApp numbers by Meta's quality rating "
                                  "(GREEN, YELLOW, RED, FLAGGED, UNKNOWN) and status (CONNECTED, …).",
                                  labels=["quality", "status"])]

    def measure(self, conn) -> list:
        family, = self.families()
        for quality, status, count in sorted(conn.execute(_BY_QUALITY).all()):
            family.add_metric([str(quality), str(status)], float(count))
        return [family]
