"""Meta's webhooks: verified, stored and acknowledged fast, then applied per vendor by plugins.

The path of one webhook (docs/messaging.md has the rules it serves):

* ``POST /webhook/whatsapp`` (:mod:`.receiver`, ahead of Pyramid's router) checks
  ``X-Hub-Signature-256`` over the raw body and answers 200 only once the body is
  committed to ``webhook_delivery`` (once, unique by its SHA-256): concurrent requests
  share one commit (:mod:`.committer`), and a commit that fails or takes too long is a 503
  that Meta retries. Nothing about a delivery lives only in memory or in Redis once Meta
  has its 200. Nothing is parsed in the request. ``GET`` on the same path is Meta's
  verification handshake (:mod:`.views`).
* The drainer (:mod:`.drainer`, a thread of the WEBHOOK and ALL modes) takes the stored
  deliveries — its own process's as they are committed, any process's once due — splits
  each into :class:`WebhookChange` objects, asks the ``kloyst_webhook_vendors`` hook whose
  they are, and calls the tenant hook ``kloyst_webhook_changes(changes, ctx)`` on the
  plugins each vendor has enabled, in one transaction per vendor and batch. Failures are
  retried with backoff, a bounded number of times.
* :func:`unprocessed_changes` lists what Meta reported and no drainer has finished applying
  (for a decision that must not ignore a status already received, such as sending again).

**Handling another webhook field is implementing that hook.** Every field Meta sends
(``messages``, ``message_template_status_update``, ``phone_number_quality_update``, …)
reaches ``kloyst_webhook_changes`` of every plugin the vendor enabled; a plugin picks the
fields it knows::

    @hookimpl
    def kloyst_webhook_changes(changes, ctx):
        for change in changes:
            if change.field == "phone_number_quality_update":
                ...  # change.value is Meta's dict; ctx.db is scoped to the vendor

Rules for handlers: apply idempotently (deliveries are at least once, out of order, and a
failed batch is applied again), key writes on Meta's ids with unique constraints
(:func:`insert_skipping_conflicts` gives ``INSERT … ON CONFLICT DO NOTHING`` on both
databases), and raise :class:`RetryLater` when a change names something not recorded yet.
The messages plugin (``kloyst_plugins/messages/webhooks.py``) is the worked example.
"""

from __future__ import annotations

from pyramid.security import NO_PERMISSION_REQUIRED

from kloyst.webhooks import views
from kloyst.webhooks.changes import MalformedDelivery, RetryLater, WebhookChange, parse_envelope
from kloyst.webhooks.deliveries import insert_skipping_conflicts, unprocessed_changes
from kloyst.webhooks.receiver import ROUTE_NAME, Receiver

__all__ = ["WebhookChange", "RetryLater", "MalformedDelivery", "parse_envelope", "insert_skipping_conflicts",
           "unprocessed_changes", "WEBHOOK_PREFIX", "WEBHOOK_PATH", "MAX_BODY_BYTES", "includeme"]

# Every webhook route starts here; the WEBHOOK mode (kloyst.runner) serves nothing else but health.
WEBHOOK_PREFIX = "/webhook/"
WEBHOOK_PATH = WEBHOOK_PREFIX + "whatsapp"
# Meta documents webhook payloads of up to 3 MB.
MAX_BODY_BYTES = 3 * 1024 * 1024

# What the OpenAPI document says of the two methods (kloyst.http.openapi): Meta, not a vendor, calls them.
VERIFY_DOC = {
    "summary": "Meta's webhook verification handshake: echoes hub.challenge when hub.verify_token matches",
    "tags": ["webhook"],
    "parameters": [{"name": name, "in": "query", "required": True, "schema": {"type": "string"}}
                   for name in ("hub.mode", "hub.verify_token", "hub.challenge")],
    "responses": {"200": {"description": "The challenge, echoed.", "content": {"text/plain": {"schema": {
        "type": "string"}}}}},
}
RECEIVE_DOC = {
    "summary": "A webhook delivery from Meta, signed with X-Hub-Signature-256; stored, then applied",
    "tags": ["webhook"],
    "parameters": [{"name": "X-Hub-Signature-256", "in": "header", "required": True, "schema": {"type": "string"},
                    "description": "sha256= and the hex HMAC-SHA256 of the raw body with the app secret."}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}},
    "responses": {"200": {"description": "Committed to the database.",
                          "content": {"application/json": {"schema": {
                              "type": "object", "required": ["ok"], "additionalProperties": False,
                              "properties": {"ok": {"const": True}}}}}},
                  "401": {"description": "Missing or wrong signature; nothing stored."},
                  "413": {"description": "Larger than Meta's 3 MB."},
                  "503": {"description": "Not committed in time; Meta retries it."}},
}


def includeme(config) -> None:
    """The public webhook route (outside the API prefix), its body limit, and its receiver (with its committer)."""
    registry = config.registry
    config.add_body_limit(WEBHOOK_PATH, MAX_BODY_BYTES, exact=True)
    config.add_route(ROUTE_NAME, WEBHOOK_PATH)
    registry["kloyst.webhook_receiver"] = receiver = Receiver(registry, WEBHOOK_PATH)
    # Meta delivers from a few shared addresses and retries what is refused: never rate limited (rate_cost=0).
    config.add_view(views.verify, route_name=ROUTE_NAME, request_method="GET", permission=NO_PERMISSION_REQUIRED,
                    openapi=VERIFY_DOC, rate_cost=0)
    config.add_view(views.receive, route_name=ROUTE_NAME, request_method="POST", permission=NO_PERMISSION_REQUIRED,
                    openapi=RECEIVE_DOC, rate_cost=0)
    # POSTs are answered before routing (see kloyst.webhooks.receiver); the view serves apps with another policy.
    config.set_execution_policy(receiver)
