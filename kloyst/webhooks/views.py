"""``GET|POST /webhook/whatsapp`` as Pyramid views (public: Meta sends no bearer token).

``GET`` is Meta's subscription handshake. Signed ``POST``s are answered by
:mod:`kloyst.webhooks.receiver` as the app's execution policy, before routing; the ``POST``
view is the same receiver for an app whose execution policy is another (the route table
then tells the truth about the methods either way).
"""

from __future__ import annotations

import hmac

from pyramid.response import Response

from kloyst.errors import BadRequest, Forbidden


def verify(request):
    """Echo ``hub.challenge`` when ``hub.mode`` is ``subscribe`` and ``hub.verify_token`` is ours."""
    params = request.GET
    if params.get("hub.mode") != "subscribe" or not params.get("hub.challenge"):
        raise BadRequest("a webhook verification needs hub.mode=subscribe, hub.verify_token and hub.challenge",
                         code="invalid_verification")
    token = params.get("hub.verify_token", "").encode()
    if not hmac.compare_digest(token, request.registry.settings["kloyst.meta.verify_token"].encode()):
        raise Forbidden("hub.verify_token is not this server's META_VERIFY_TOKEN", code="invalid_verify_token")
    return Response(text=params["hub.challenge"], content_type="text/plain", charset="utf-8")


def receive(request):
    """A signed delivery, when it reached the router (the body limit was the tween's)."""
    status, body = request.registry["kloyst.webhook_receiver"].accept(request.body,
                                                                      request.headers.get("X-Hub-Signature-256"))
    return Response(body=body, status=status, content_type="application/json", charset=None)
