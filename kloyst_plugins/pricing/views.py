"""The vendor's pricing API: ``/v1/pricing/rates`` and ``/v1/quotations``.

Enablement, tenancy and authentication are the core's: ``model=Quotation`` loads ``{id}``
through tenant scoping (another vendor's quotation is a 404) and members may quote. The
PDF is made by a task the service asks for with the quotation, run after it commits; until
it is READY its route answers 409 with the current state.
"""

from __future__ import annotations

from pyramid.response import Response
from sqlalchemy import select

from kloyst.api import Conflict, format_micros, openapi, paginate, Unprocessable, utcnow
from kloyst_plugins.pricing import markets, pdf, snapshots
from kloyst_plugins.pricing.models import QUOTABLE, PdfStatus, PricingMarket, PricingRate, PricingTier, Quotation
from kloyst_plugins.pricing.schemas import (QuotationAnswer, QuotationCreate, QuotationListQuery, QuotationPage, Rates,
                                            RatesQuery)
from kloyst_plugins.pricing.services import QuotationService, expire_if_due, wallet_of
from kloyst_plugins.pricing.window import in_window_by_country
from kloyst_plugins.contacts.api import count_by_country
from kloyst_plugins.templates.api import MessageTemplate


def percent(micropercent: int) -> str:
    return format_micros(micropercent).rstrip("0").rstrip(".")


def item_json(item) -> dict:
    return {"country": item.country, "market": item.market, "category": item.category, "quantity": item.quantity,
            "list_rate": format_micros(item.list_rate_micros), "rate": format_micros(item.rate_micros),
            "tier": None if item.tier_from is None else {"from": item.tier_from, "to": item.tier_to,
                                                         "discount_percent": percent(item.discount_micropercent)},
            "unit_price": format_micros(item.unit_price_micros), "amount": format_micros(item.amount_micros)}


def estimate_json(quotation: Quotation) -> dict:
    """The recipients whose customer-service window was open at quote time: an estimate, not part of the total."""
    return {"recipients": quotation.estimated_free_in_window,
            "amount": format_micros(quotation.estimated_free_in_window_micros)}


def quotation_json(quotation: Quotation, *, items: bool = True) -> dict:
    answer = {"id": quotation.id, "status": quotation.status, "category": quotation.category,
              "currency": quotation.currency, "snapshot_id": quotation.snapshot_id,
              "recipients": quotation.recipients, "subtotal": format_micros(quotation.subtotal_micros),
              "fees": format_micros(quotation.fees_micros),
              "minimum_topup": format_micros(quotation.minimum_topup_micros),
              "total": format_micros(quotation.total_micros),
              "estimated_free_in_window": estimate_json(quotation), "adjustments": quotation.adjustments,
              "rules": quotation.rules, "expires_at": quotation.expires_at, "accepted_at": quotation.accepted_at,
              "wallet": {"available": None if quotation.wallet_available_micros is None
                         else format_micros(quotation.wallet_available_micros),
                         "sufficient": quotation.wallet_sufficient},
              "source": quotation.source, "pdf_status": quotation.pdf_status, "pdf_error": quotation.pdf_error,
              "created_at": quotation.created_at}
    if items:
        answer["items"] = [item_json(item) for item in quotation.items]
    return answer


def _template_category(request, template_id) -> str:
    template = request.db.get(MessageTemplate, template_id)
    if template is None:
        raise Unprocessable(f"template {template_id} is not one of your templates", code="unknown_template",
                            details={"fields": [{"field": "template_id", "problem": "not found"}]})
    return template.category


def create_quotation(request):

    body = request.validated()
    category = body.category
    if body.template_id is not None:
        template_category = _template_category(request, body.template_id)
        if category is not None and category != template_category:
            raise Unprocessable(f"template {body.template_id} is a {template_category} template, not {category}",
                                code="category_mismatch", field="category")
        category = template_category
    counts = count_by_country(request.db, body.audience, vendor_id=request.vendor_id)
    source = {"audience": body.audience.model_dump(mode="json"),
              "template_id": str(body.template_id) if body.template_id else None}
    in_window = in_window_by_country(request.db, body.audience, vendor_id=request.vendor_id, at=utcnow())
    quotation = QuotationService.for_request(request).quote(counts, category, source=source,
                                                            created_by=request.identity.user_id, in_window=in_window)
    request.response.status_int = 201
    request.response.headers["Location"] = request.route_path("pricing.quotation", id=quotation.id)
    return {"quotation": quotation_json(quotation)}


def list_quotations(request):
    query = request.validated_query()
    statement = select(Quotation)
    if query.status is not None:
        statement = statement.where(Quotation.status == query.status.value)
    page = paginate(request.db, statement, Quotation, query)
    return {"items": [quotation_json(expire_if_due(q), items=False) for q in page.items],
            "next_cursor": page.next_cursor}


def get_quotation(request):
    return {"quotation": quotation_json(expire_if_due(request.context))}


def get_quotation_pdf(request):
    quotation = request.context
    if quotation.pdf_status != PdfStatus.READY.value:
        raise Conflict(f"the PDF is {quotation.pdf_status}, not ready yet", code="pdf_not_ready",
                       details={"pdf_status": quotation.pdf_status, "pdf_error": quotation.pdf_error})
    return Response(body=quotation.pdf_bytes, content_type="application/pdf",
                    content_disposition=f'attachment; filename="quotation-{pdf.reference(quotation)}.pdf"')


def _whole_card(db, snapshot, currency: str) -> dict:
    if snapshot is None:
        return {"currency": currency, "snapshot": None, "markets": {}}
    card: dict[str, dict] = {}
    for market, category, micros in db.execute(
            select(PricingRate.market, PricingRate.category, PricingRate.rate_micros)
            .where(PricingRate.snapshot_id == snapshot.id).order_by(PricingRate.market, PricingRate.category)):
        card.setdefault(market, {})[category] = format_micros(micros)
    return {"currency": currency, "snapshot": {"id": snapshot.id, "effective_from": snapshot.effective_from},
            "markets": card}


def get_rates(request):
    """The card in force now in the vendor's currency; with ``?country=``, that country's rates, tiers and
    what one message costs this vendor after its pricing rules."""
    query = request.validated_query()
    db = request.db
    wallet = wallet_of(db, request.vendor_id)
    snapshot = snapshots.current(db, wallet.currency)
    if query.country is None:
        return _whole_card(db, snapshot, wallet.currency)
    country = query.country.upper()
    if snapshot is None:
        raise Unprocessable(f"no rate card in {wallet.currency} is in force", code="no_pricing_snapshot")
    market = db.scalar(select(PricingMarket.market).where(PricingMarket.snapshot_id == snapshot.id,
                                                          PricingMarket.country == country)) or markets.OTHER
    rates = dict(db.execute(select(PricingRate.category, PricingRate.rate_micros).where(
        PricingRate.snapshot_id == snapshot.id, PricingRate.market == market)).all())
    tiers: dict[str, list] = {}
    for band in db.scalars(select(PricingTier).where(PricingTier.snapshot_id == snapshot.id,
                                                     PricingTier.market == market).order_by(PricingTier.band_from)):
        tiers.setdefault(band.category, []).append(
            {"from": band.band_from, "to": band.band_to, "rate": format_micros(band.rate_micros),
             "discount_percent": percent(band.discount_micropercent)})
    service = QuotationService.for_request(request)
    yours = {}
    for category in QUOTABLE:
        if category in rates:
            _line, unit = service.price({country: 1}, category).lines[0]
            yours[category] = format_micros(unit)
    return {"country": country, "market": market, "currency": snapshot.currency,
            "snapshot": {"id": snapshot.id, "effective_from": snapshot.effective_from},
            "rates": {category: format_micros(micros) for category, micros in sorted(rates.items())},
            "tiers": tiers, "your_unit_price": yours}


def includeme(config) -> None:
    config.add_route("pricing.rates", "/pricing/rates")
    config.add_view(get_rates, route_name="pricing.rates", request_method="GET", renderer="json",
                    query_schema=RatesQuery, response_schema=Rates)
    config.add_route("pricing.quotations", "/quotations")
    config.add_view(list_quotations, route_name="pricing.quotations", request_method="GET", renderer="json",
                    query_schema=QuotationListQuery, response_schema=QuotationPage)
    config.add_view(create_quotation, route_name="pricing.quotations", request_method="POST", renderer="json",
                    body_schema=QuotationCreate, response_schema=QuotationAnswer, status=201, rate_cost=5)
    config.add_route("pricing.quotation", "/quotations/{id}", model=Quotation)
    config.add_view(get_quotation, route_name="pricing.quotation", request_method="GET", renderer="json",
                    response_schema=QuotationAnswer)
    config.add_route("pricing.quotation.pdf", "/quotations/{id}/pdf", model=Quotation)
    config.add_view(get_quotation_pdf, route_name="pricing.quotation.pdf", request_method="GET",
                    openapi=openapi.download("application/pdf"), rate_cost=5)
    # The platform-admin routes (admin.pricing.…), registered here so that this includeme is the
    # plugin's one list of routes: kloyst_routes includes .views and nothing else.
    config.include(".views_admin")
