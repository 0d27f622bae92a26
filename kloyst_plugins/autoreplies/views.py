"""The auto-replies HTTP API, under ``/v1/autoreplies``: rules with their counters, what was answered, settings.

Enablement, tenancy and authentication are the core's (the route gate, ``model=AutoReplyRule``);
members read, admins change what the business says to its customers on its behalf.
"""

from __future__ import annotations

from sqlalchemy import select

from kloyst.api import no_content, Page, paginate, utcnow
from kloyst_plugins.autoreplies import hours, services
from kloyst_plugins.autoreplies.models import AutoReply, AutoReplyRule, AutoReplySettings
from kloyst_plugins.autoreplies.schemas import (ReplyPage, RuleAnswer, RuleCreate, RulePage, RulePatch,
                                                SettingsAnswer, SettingsPatch)


def rule_json(rule: AutoReplyRule) -> dict:
    template = ({"name": rule.template_name, "language": rule.template_language} if rule.template_name else None)
    return {"id": rule.id, "keyword": rule.keyword, "match": rule.match, "language": rule.language or None,
            "action": rule.action, "text": rule.reply_text, "template": template, "enabled": rule.enabled,
            "stats": {"hits": rule.hits, "failures": rule.failures, "last_hit_at": rule.last_hit_at,
                      "last_failed_at": rule.last_failed_at, "last_error": rule.last_error},
            "created_at": rule.created_at, "updated_at": rule.updated_at}


def settings_json(row: AutoReplySettings) -> dict:
    return {"time_zone": row.time_zone, "business_hours": row.business_hours or {}, "away_enabled": row.away_enabled,
            "away_text": row.away_text, "away_interval_hours": row.away_interval_hours,
            "opt_out_confirmation": row.opt_out_confirmation, "opt_out_text": row.opt_out_text,
            "opt_in_confirmation": row.opt_in_confirmation, "opt_in_text": row.opt_in_text,
            "open_now": hours.is_open(row.business_hours or {}, row.time_zone, utcnow())}


def list_rules(request):
    page = paginate(request.db, select(AutoReplyRule), AutoReplyRule, request.validated_query())
    return {"items": [rule_json(r) for r in page.items], "next_cursor": page.next_cursor}


def create_rule(request):
    rule = services.create_rule(request.db, request.validated())
    request.response.status_int = 201
    return {"rule": rule_json(rule)}


def get_rule(request):
    return {"rule": rule_json(request.context)}


def patch_rule(request):
    return {"rule": rule_json(services.patch_rule(request.db, request.context, request.validated()))}


def delete_rule(request):
    request.db.delete(request.context)
    return no_content(request)


def reply_json(reply: AutoReply) -> dict:
    return {"id": reply.id, "kind": reply.kind, "status": reply.status, "rule_id": reply.rule_id,
            "contact_id": reply.contact_id, "phone_number_id": reply.phone_number_id, "inbound_id": reply.inbound_id,
            "message_id": reply.message_id, "error": reply.error, "created_at": reply.created_at}


def list_replies(request):
    page = paginate(request.db, select(AutoReply), AutoReply, request.validated_query())
    return {"items": [reply_json(r) for r in page.items], "next_cursor": page.next_cursor}


def get_settings(request):
    return {"settings": settings_json(services.settings_of(request.db))}


def patch_settings(request):
    return {"settings": settings_json(services.update_settings(request.db, request.validated()))}


def includeme(config) -> None:
    config.add_route("autoreplies.rules", "/autoreplies/rules")
    config.add_view(list_rules, route_name="autoreplies.rules", request_method="GET", renderer="json",
                    query_schema=Page, response_schema=RulePage)
    config.add_view(create_rule, route_name="autoreplies.rules", request_method="POST", renderer="json",
                    body_schema=RuleCreate, response_schema=RuleAnswer, status=201, permission="vendor.admin")
    config.add_route("autoreplies.rule", "/autoreplies/rules/{id}", model=AutoReplyRule)
    config.add_view(get_rule, route_name="autoreplies.rule", request_method="GET", renderer="json",
                    response_schema=RuleAnswer)
    config.add_view(patch_rule, route_name="autoreplies.rule", request_method="PATCH", renderer="json",
                    body_schema=RulePatch, response_schema=RuleAnswer, permission="vendor.admin")
    config.add_view(delete_rule, route_name="autoreplies.rule", request_method="DELETE", renderer="json",
                    status=204, permission="vendor.admin")
    config.add_route("autoreplies.replies", "/autoreplies/replies")
    config.add_view(list_replies, route_name="autoreplies.replies", request_method="GET", renderer="json",
                    query_schema=Page, response_schema=ReplyPage)
    config.add_route("autoreplies.settings", "/autoreplies/settings")
    config.add_view(get_settings, route_name="autoreplies.settings", request_method="GET", renderer="json",
                    response_schema=SettingsAnswer)
    config.add_view(patch_settings, route_name="autoreplies.settings", request_method="PATCH", renderer="json",
                    body_schema=SettingsPatch, response_schema=SettingsAnswer, permission="vendor.admin")
