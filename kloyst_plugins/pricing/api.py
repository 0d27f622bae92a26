"""The pricing plugin's public API: quotations, one message's price, and the customer-service window.

A plugin that ``requires`` pricing imports from here and nowhere else in ``kloyst_plugins.pricing``;
everything else in the package may change without notice.

A free-form message inside the customer-service window (a conversation's reply) is of category
:data:`SERVICE`: ``QuotationService.message_price(country, SERVICE)`` is 0, so it is queued
unpriced and never held (docs/pricing.md, "The customer-service window").
"""

from kloyst_plugins.pricing.models import Quotation
from kloyst_plugins.pricing.services import (estimate_free_in_window, expire_if_due, mark_accepted,
                                             quotation_unit_prices, QuotationService)
from kloyst_plugins.pricing.window import (CUSTOMER_SERVICE_WINDOW, in_window_by_country, SERVICE, window_closes_at,
                                           window_open)

__all__ = [
    "CUSTOMER_SERVICE_WINDOW",
    "estimate_free_in_window",
    "expire_if_due",
    "in_window_by_country",
    "mark_accepted",
    "Quotation",
    "quotation_unit_prices",
    "QuotationService",
    "SERVICE",
    "window_closes_at",
    "window_open",
]
