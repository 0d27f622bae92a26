"""Outgoing mail, always through the outbox so a rolled-back signup never sends a link.

``send(outbox, to=..., subject=..., body=...)`` records a ``mail.send`` event; the worker
delivers it with the configured backend:

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
from kloyst.outbox import Outbox

log = logging.getLogger(__name__)

TOPIC = "mail.send"


def send(outbox: Outbox, *, to: str, subject: str, body: str, vendor_id: uuid.UUID | None = None) -> None:
    outbox.add(TOPIC, {"to": to, "subject": subject, "body": body}, vendor_id=vendor_id)


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


def deliver(ctx, outbox_event) -> None:
    """Outbox handler for ``mail.send``.

    Mail bodies carry one-time links. Once the message is handed over, the body is removed
    from the outbox row in the same transaction that marks it delivered, so the database
    never keeps a usable token in plaintext.
    """
    message = EmailMessage()
    message["From"] = ctx.settings["kloyst.mail.sender"]
    message["To"] = outbox_event.payload["to"]
    message["Subject"] = outbox_event.payload["subject"]
    message["Message-ID"] = f"<outbox-{outbox_event.id}@kloyst>"
    body = outbox_event.payload["body"]
    message.set_content(body, cte=_transfer_encoding(body))
    ctx.registry["kloyst.mailer"].send(message, key=f"{outbox_event.created_at:%Y%m%dT%H%M%S}-{outbox_event.id}")
    outbox_event.payload = {**outbox_event.payload, "body": None, "body_removed_after_delivery": True}
