"""The pricing plugin's public API: quotations.

A plugin that ``requires`` pricing imports from here and nowhere else in ``kloyst_plugins.pricing``;
everything else in the package may change without notice.
"""

from kloyst_plugins.pricing.models import Quotation
from kloyst_plugins.pricing.services import expire_if_due, mark_accepted, quotation_unit_prices, QuotationService

__all__ = [
    "expire_if_due",
    "mark_accepted",
    "Quotation",
    "quotation_unit_prices",
    "QuotationService",
]
