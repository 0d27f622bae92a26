"""The general rate limit: every API request pays from its caller's token buckets, or is a 429.

Why here and not in views: a view that forgets to count is an open door, so the limit is a
view deriver every view goes through. A route declares only what it costs, where it is
declared (``config.add_view(..., rate_cost=10)`` for a Meta sync, an export, a bulk write);
the default is 1, and ``rate_cost=0`` exempts a route (health checks, Meta's webhooks).

Who pays (settings ``kloyst.ratelimit.*``, token buckets of :mod:`kloyst.ratelimit`):

* a signed-in user pays from their own bucket *and* from their vendor's, in one atomic take,
  so one busy user cannot use up a colleague's share and many users cannot exceed the vendor's;
  a platform admin, who belongs to no vendor, pays from their own bucket only;
* a request without a valid access token pays from its client IP's bucket (the address the
  WSGI server established, as the sign-in throttles see it: :func:`kloyst.auth.throttle.client_ip`).

The deriver sits outside the permission check, so a flood of requests with a wrong token is
counted too. Every limited answer carries the IETF draft headers ``RateLimit-Limit``,
``RateLimit-Remaining`` and ``RateLimit-Reset`` (seconds until the binding bucket is full
again) for the bucket with the fewest tokens left; a refusal is a 429 ``rate_limited`` with
``Retry-After`` and the same headers. Exception views (a 404, a 401) are never charged twice.
"""

from __future__ import annotations

from pyramid.viewderivers import INGRESS

from kloyst.auth.throttle import client_ip
from kloyst.config import ConfigurationError
from kloyst.errors import TooManyRequests
from kloyst.ratelimit import Bucket, Quota

DEFAULT_COST = 1

# What a refusal names as the exhausted budget, by the first part of the bucket's key.
_SCOPES = {"user": "your user", "vendor": "your vendor's users together", "ip": "your address"}


def buckets_for(request) -> list[Bucket]:
    """The buckets this request pays from: the user's and the vendor's, or the client address's."""
    settings = request.registry.settings
    identity = request.identity
    if identity is None:
        rate = settings["kloyst.ratelimit.per_ip"]
        return [Bucket(f"api:ip:{client_ip(request)}", rate.count, rate.seconds)]
    rate = settings["kloyst.ratelimit.per_user"]
    buckets = [Bucket(f"api:user:{identity.user_id}", rate.count, rate.seconds)]
    if identity.vendor_id is not None:
        rate = settings["kloyst.ratelimit.per_vendor"]
        buckets.append(Bucket(f"api:vendor:{identity.vendor_id}", rate.count, rate.seconds))
    return buckets


def quota_headers(quota: Quota) -> dict[str, str]:
    return {"RateLimit-Limit": str(quota.limit), "RateLimit-Remaining": str(quota.remaining),
            "RateLimit-Reset": str(quota.reset_seconds)}


def refusal(quota: Quota, cost: int) -> TooManyRequests:
    scope = quota.key.split(":")[1]
    wait = quota.retry_after_seconds
    what = f"this request costs {cost}; " if cost > 1 else ""
    return TooManyRequests(
        f"too many requests from {_SCOPES.get(scope, scope)}: the limit is {quota.limit} per {quota.period:g} "
        f"seconds; {what}try again in {wait} seconds", code="rate_limited", retry_after=wait,
        details={"retry_after": wait, "scope": scope, "limit": quota.limit, "remaining": quota.remaining,
                 "cost": cost},
        headers={"Retry-After": str(wait), **quota_headers(quota)})


def _cost(info) -> int:
    cost = info.options.get("rate_cost", DEFAULT_COST)
    if isinstance(cost, bool) or not isinstance(cost, int) or cost < 0:
        raise ConfigurationError(f"the view of route {info.options.get('route_name')!r} has rate_cost={cost!r}: "
                                 "give a whole number of requests it counts as (0 exempts it from the rate limit)")
    return cost


def rate_limit_deriver(view, info):
    """Charge every request to the view its cost (``rate_cost``, default 1) before anything else runs."""
    cost = _cost(info)
    if cost == 0 or info.exception_only:
        return view

    def rate_limited(context, request):
        if getattr(request, "exception", None) is not None:  # an error view answering a request already charged
            return view(context, request)
        quota = request.registry["kloyst.rate_limiter"].take(buckets_for(request), cost)
        if not quota.allowed:
            raise refusal(quota, cost)
        headers = quota_headers(quota)
        request.response.headers.update(headers)  # answers rendered from request.response, errors included
        response = view(context, request)
        if response is not request.response and hasattr(response, "headers"):
            response.headers.update(headers)
        return response

    return rate_limited


rate_limit_deriver.options = ("rate_cost",)  # type: ignore[attr-defined]  # where pyramid reads a deriver's options


def includeme(config) -> None:
    # Outside secured_view: requests refused 401/403 are counted too, and cost no more than a lookup.
    config.add_view_deriver(rate_limit_deriver, under=INGRESS, over="secured_view")
