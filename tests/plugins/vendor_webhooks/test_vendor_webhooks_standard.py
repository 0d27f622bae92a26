"""The standard plugin tests (kloyst.testing.StandardPluginTests) run on the vendor_webhooks plugin."""

import itertools

from kloyst.testing import StandardPluginTests
from kloyst_plugins.vendor_webhooks.models import VendorEvent, WebhookDelivery, WebhookEndpoint

_event_ids = itertools.count(10_000_000)


class TestVendorWebhooksStandard(StandardPluginTests):
    plugin = "vendor_webhooks"

    def make_row(self, db, model, vendor):
        """Endpoints with a (dummy) sealed secret; deliveries of a feed event numbered apart from every other."""
        endpoint = WebhookEndpoint(vendor_id=vendor.vendor_id, url="https://93.184.215.14/hook", event_types=["*"],
                                   secret_enc=b"sealed", enc_kid="test")
        db.add(endpoint)
        db.flush()
        if model is WebhookEndpoint:
            return endpoint
        if model is WebhookDelivery:
            number = next(_event_ids)
            event = VendorEvent(vendor_id=vendor.vendor_id, seq=number, event_id=number, type="ContactCreated",
                                occurred_at=endpoint.created_at, payload={})
            db.add(event)
            db.flush()
            delivery = WebhookDelivery(vendor_id=vendor.vendor_id, endpoint_id=endpoint.id, event_row_id=event.id)
            db.add(delivery)
            db.flush()
            return delivery
        return super().make_row(db, model, vendor)
