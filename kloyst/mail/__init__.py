"""Outgoing mail, always through the outbox so a rolled-back signup never sends a link.

``send(outbox, template, user_id=..., ...)`` records a ``mail.send`` event that names a
template and ids, never an address, a name or a token; the worker renders the mail from them
when it delivers (:mod:`kloyst.mail.templates` says why and how the link's token is minted
then) and hands it to the configured backend:

- ``file`` (embedded default): one ``.eml`` file per message in ``kloyst.mail.file_dir``
  (``var/mail/``), named after the outbox event, so a redelivery rewrites the same file;
- ``smtp``: ``kloyst.mail.smtp_url`` (``smtp://`` with STARTTLS or ``smtps://``).
"""

from __future__ import annotations

import logging
import smtplib
import ssl
import uuid
from email.message import EmailMessage
from pathlib import Path
from urllib.parse import unquote, urlparse

from kloyst.config import ConfigurationError
from kloyst.mail import templates
from kloyst.outbox import Outbox

log = logging.getLogger(__name__)

TOPIC = "mail.send"


def send(outbox: Outbox, template: str, *, vendor_id: uuid.UUID | None = None, user_id: uuid.UUID | None = None,
         inviter_id: uuid.UUID | None = None, address: str | None = None, with_token: bool = False) -> None:
    """Queue the mail ``template`` (one of :data:`kloyst.mail.templates.TEMPLATES`) for a user or a sealed address.

    ``address`` must be sealed with :func:`kloyst.mail.templates.seal_address`; ``with_token`` adds the
    nonce its one-time token is minted from at delivery.
    """
    if template not in templates.TEMPLATES:
        raise ValueError(f"unknown mail template {template!r}")
    payload = {"template": template}
    for name, value in (("user_id", user_id), ("inviter_id", inviter_id)):
        if value is not None:
            payload[name] = str(value)
    if address is not None:
        payload["address"] = address
    if with_token:
        payload["nonce"] = templates.new_nonce()
    outbox.add(TOPIC, payload, vendor_id=vendor_id)


class FileMailer:
    def __init__(self, directory: str) -> None:
        self.directory = Path(directory)

    def send(self, message: EmailMessage, key: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{key}.eml"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(bytes(message))
        tmp.replace(path)
        log.info("mail to %s written to %s", message["To"], path)


class SmtpMailer:
    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        if parsed.scheme not in {"smtp", "smtps"} or not parsed.hostname:
            raise ConfigurationError("kloyst.mail.smtp_url must look like smtp://user:password@host:587")
        self.implicit_tls = parsed.scheme == "smtps"
        self.host = parsed.hostname
        self.port = parsed.port or (465 if self.implicit_tls else 587)
        self.username = unquote(parsed.username) if parsed.username else None
        self.password = unquote(parsed.password) if parsed.password else None

    def send(self, message: EmailMessage, key: str) -> None:
        context = ssl.create_default_context()
        client: smtplib.SMTP
        if self.implicit_tls:
            client = smtplib.SMTP_SSL(self.host, self.port, timeout=30, context=context)
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=30)
        with client:
            if not self.implicit_tls:
                client.starttls(context=context)
            if self.username:
                client.login(self.username, self.password or "")
            client.send_message(message)


def make_mailer(settings):
    backend = settings["kloyst.mail.backend"]
    if backend == "file":
        return FileMailer(settings["kloyst.mail.file_dir"])
    if backend == "smtp":
        if not settings["kloyst.mail.smtp_url"]:
            raise ConfigurationError("kloyst.mail.backend = smtp needs kloyst.mail.smtp_url (SMTP_URL)")
        return SmtpMailer(settings["kloyst.mail.smtp_url"])
    raise ConfigurationError(f"kloyst.mail.backend must be file or smtp, not {backend!r}")


def _transfer_encoding(body: str) -> str | None:
    """``7bit`` for plain ASCII text, so each link stays one line a person can copy from the ``.eml`` file
    (quoted-printable, the library's pick for lines over 78 characters, turns ``token=`` into ``token=3D``
    and folds the link); None (the library's choice) for anything else."""
    if body.isascii() and all(len(line) <= 998 for line in body.splitlines()):  # RFC 5322's line limit
        return "7bit"
    return None


def _legacy(payload: dict) -> templates.Rendered | None:
    """A mail queued, text and all, by a Kloyst from before rendering at delivery (still pending at the upgrade)."""
    if payload.get("body") is None:
        return None
    return templates.Rendered(payload["to"], templates.header_text(payload["subject"]), payload["body"])


def deliver(ctx, outbox_event) -> None:
    """Outbox handler for ``mail.send``: render the mail from its ids, hand it over, then record its token.

    The token's row is written last, after the hand-over, in the transaction that marks the
    event delivered: on SQLite no write lock is held while an SMTP server answers, and a retry
    (the hand-over or the commit failed) mails the same token again (it is minted from the
    event's nonce) and records it once.
    """
    payload = outbox_event.payload
    rendered = templates.render(ctx, payload) if "template" in payload else _legacy(payload)
    if rendered is None:
        log.info("mail %s (%s): nobody to send it to", outbox_event.id, payload.get("template", "legacy"))
        return
    message = EmailMessage()
    message["From"] = ctx.settings["kloyst.mail.sender"]
    message["To"] = rendered.to
    message["Subject"] = rendered.subject
    message["Message-ID"] = f"<outbox-{outbox_event.id}@kloyst>"
    message.set_content(rendered.body, cte=_transfer_encoding(rendered.body))
    ctx.registry["kloyst.mailer"].send(message, key=f"{outbox_event.created_at:%Y%m%dT%H%M%S}-{outbox_event.id}")
    if rendered.token is not None:
        ctx.db.add(rendered.token)
        ctx.db.flush()
    if "template" not in payload:
        outbox_event.payload = {**payload, "to": None, "body": None, "body_removed_after_delivery": True}
