"""Kloyst's Meta Cloud API client (core): the HTTP client, payload builders, usage headers, error classes.

See :mod:`kloyst.meta.client` for why it is built on urllib3 and what it guarantees, and
:mod:`kloyst.meta.errors` for how each of Meta's error codes is classified.
"""

from kloyst.meta.client import MetaClient, MetaResponse
from kloyst.meta.errors import Classification, ErrorKind, MetaError, classify
from kloyst.meta.payloads import message_payload, template_payload, text_payload
from kloyst.meta.usage import Usage, parse_usage

__all__ = ["Classification", "ErrorKind", "MetaClient", "MetaError", "MetaResponse", "Usage", "classify",
           "message_payload", "parse_usage", "template_payload", "text_payload"]
