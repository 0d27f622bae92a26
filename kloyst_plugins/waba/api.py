"""The waba plugin's public API: phone numbers and who may use which account.

A plugin that ``requires`` waba imports from here and nowhere else in ``kloyst_plugins.waba``;
everything else in the package may change without notice.
"""

from kloyst_plugins.waba.access import accessible_wabas, meta_waba_id_of, phone_number_access, WabaAccess
from kloyst_plugins.waba.models import PhoneNumber
from kloyst_plugins.waba.services import CONNECTED

__all__ = [
    "accessible_wabas",
    "CONNECTED",
    "meta_waba_id_of",
    "phone_number_access",
    "PhoneNumber",
    "WabaAccess",
]
