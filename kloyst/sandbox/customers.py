"""The sandbox's WhatsApp users: phone numbers, business-scoped user ids (BSUIDs), usernames, service windows.

Meta has put a BSUID in every messages webhook since April 2026, and a user with a username may
reach a business with no phone number in the payload at all. So every user the sandbox talks
about has a BSUID: the one a simulated customer was given (``POST /_sandbox/customers/inbound``),
else one derived from the phone number. Derived, not stored: a benchmark sends to a million
numbers, and a keyed hash gives each the same BSUID every time for the cost of one digest.

A **customer-service window** is kept per (business number, user): an inbound message from the
user opens it for :attr:`~kloyst.sandbox.state.Behaviour.window_seconds` (24 hours) from the
message's timestamp; a later inbound message moves it on. A free-form message (anything but a
template) sent outside it fails as Meta fails it, asynchronously: the send is accepted (200,
a wamid) and one ``failed`` status webhook follows with error 131047. Templates are not
subject to the window.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from phonenumbers import COUNTRY_CODE_TO_REGION_CODE

BSUID = re.compile(r"^[A-Z]{2}\.(?:ENT\.)?[A-Za-z0-9]{1,128}$")  # "US.1349…", parent "US.ENT.1181…"
PARENT_BSUID = re.compile(r"^[A-Z]{2}\.ENT\.[A-Za-z0-9]{1,128}$")
USERNAME = re.compile(r"^[A-Za-z0-9._]{3,35}$")
_KEY = b"kloyst-sandbox-bsuid"


def region_of(phone: str) -> str:
    """The ISO country code of a phone number's calling code (``"4917…"`` → ``"DE"``); ``"ZZ"`` when unknown."""
    for length in (1, 2, 3):
        regions = COUNTRY_CODE_TO_REGION_CODE.get(int(phone[:length])) if phone[:length].isdigit() else None
        if regions:
            return "US" if regions[0] == "001" else regions[0]
    return "ZZ"


def _digits(seed: str) -> str:
    return str(int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=8, key=_KEY).digest(), "big"))


def derived_bsuid(phone: str) -> str:
    """The BSUID the sandbox gives the user of ``phone`` (digits, no "+") unless told another."""
    return f"{region_of(phone)}.{_digits('phone:' + phone)}"


def username_bsuid(username: str, country: str = "US") -> str:
    """The BSUID of a simulated user known only by a username."""
    return f"{country}.{_digits('username:' + username.lower())}"


@dataclass
class Customer:
    """A simulated WhatsApp user the sandbox has heard from (or was told about)."""

    user_id: str
    phone: str | None = None  # digits, no "+"; None: the sandbox does not know it
    phone_shared: bool = True  # False: a username user who has not shared the number, so webhooks withhold it
    username: str | None = None
    parent_user_id: str | None = None
    name: str = "Sandbox User"

    @property
    def wa_id(self) -> str | None:
        """The phone number as webhooks show it, or None when it is withheld."""
        return self.phone if self.phone and self.phone_shared else None

    def as_json(self) -> dict:
        return {"user_id": self.user_id, "wa_id": self.wa_id, "phone": self.phone, "phone_shared": self.phone_shared,
                "username": self.username, "parent_user_id": self.parent_user_id, "name": self.name}


@dataclass(frozen=True, slots=True)
class Recipient:
    """Who a send reached, as its status webhooks describe them."""

    user_id: str
    wa_id: str | None  # shown in status webhooks: the number sent to, or a customer's shared number
    by_phone: bool  # the send used ``to`` (a phone number), not ``recipient`` (a BSUID)
    username: str | None = None
    parent_user_id: str | None = None

    def contact(self, status: str) -> dict:
        """The status webhook's ``contacts`` entry: ``user_id`` always, ``wa_id`` when known, the username once
        the message reached the user (delivered, read)."""
        contact: dict = {}
        if self.username and status in ("delivered", "read"):
            contact["profile"] = {"username": self.username}
        if self.wa_id:
            contact["wa_id"] = self.wa_id
        contact["user_id"] = self.user_id
        if self.parent_user_id:
            contact["parent_user_id"] = self.parent_user_id
        return contact


class Customers:
    """Known users by BSUID, with look-ups by phone and parent BSUID. The caller holds the state's lock."""

    def __init__(self) -> None:
        self.by_user_id: dict[str, Customer] = {}
        self.user_id_by_phone: dict[str, str] = {}
        self.user_id_by_parent: dict[str, str] = {}
        # (phone number id, user id) → unix time of the last inbound message: the window's start
        self.windows: dict[tuple[str, str], float] = {}

    def remember(self, customer: Customer) -> Customer:
        """Add or update a user; a phone or parent BSUID seen with a BSUID links them from now on."""
        known = self.by_user_id.get(customer.user_id)
        if known is not None:
            known.phone = customer.phone or known.phone
            known.phone_shared = customer.phone_shared
            known.username = customer.username or known.username
            known.parent_user_id = customer.parent_user_id or known.parent_user_id
            known.name = customer.name or known.name
            customer = known
        self.by_user_id[customer.user_id] = customer
        if customer.phone:
            self.user_id_by_phone[customer.phone] = customer.user_id
        if customer.parent_user_id:
            self.user_id_by_parent[customer.parent_user_id] = customer.user_id
        return customer

    def user_id_for_phone(self, phone: str) -> str:
        return self.user_id_by_phone.get(phone) or derived_bsuid(phone)

    def recipient(self, to: str | None, bsuid: str | None) -> Recipient:
        """Resolve a send's ``to`` (digits) or, without one, its ``recipient`` (a BSUID or parent BSUID)."""
        if to:
            user_id = self.user_id_for_phone(to)
            customer = self.by_user_id.get(user_id)
            return Recipient(user_id, to, True, customer.username if customer else None,
                             customer.parent_user_id if customer else None)
        assert bsuid is not None
        customer = self.by_user_id.get(bsuid) or self.by_user_id.get(self.user_id_by_parent.get(bsuid, ""))
        if customer is None:
            return Recipient(bsuid, None, False, parent_user_id=None)
        return Recipient(customer.user_id, customer.wa_id, False, customer.username, customer.parent_user_id)

    def open_window(self, phone_number_id: str, user_id: str, at: float) -> None:
        key = (phone_number_id, user_id)
        if at > self.windows.get(key, float("-inf")):
            self.windows[key] = at

    def window_open(self, phone_number_id: str, user_id: str, now: float, window_seconds: float) -> bool:
        opened = self.windows.get((phone_number_id, user_id))
        return opened is not None and now < opened + window_seconds
