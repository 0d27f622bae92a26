"""The templates plugin's public API: approved templates and their parameters.

A plugin that ``requires`` templates imports from here and nowhere else in ``kloyst_plugins.templates``;
everything else in the package may change without notice.
"""

from kloyst_plugins.templates.models import MessageTemplate, TemplateCategory, TemplateStatus
from kloyst_plugins.templates.parameters import (
    ATTRIBUTE_PREFIX,
    build_payload,
    check_mapping,
    header_format,
    HEADER_KEY_PREFIX,
    mapping_keys,
    MEDIA_FORMATS,
    resolve_variables,
    Resolved,
    TemplateParameterError,
    validate_send,
)
from kloyst_plugins.templates.services import find_sendable, TemplateNotFound

__all__ = [
    "ATTRIBUTE_PREFIX",
    "build_payload",
    "check_mapping",
    "find_sendable",
    "header_format",
    "HEADER_KEY_PREFIX",
    "mapping_keys",
    "MEDIA_FORMATS",
    "MessageTemplate",
    "resolve_variables",
    "Resolved",
    "TemplateCategory",
    "TemplateNotFound",
    "TemplateParameterError",
    "TemplateStatus",
    "validate_send",
]
