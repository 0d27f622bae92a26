"""Events to a vendor's own systems: signed outgoing webhooks the vendor registers, and an event feed to poll.

Every domain event a vendor's endpoint subscribes to becomes a delivery, retried with backoff
for up to a day and then dead-lettered; ``GET /v1/events`` gives the portal the same events in
order behind an opaque cursor. See ``docs/vendor_webhooks.md``.
"""
