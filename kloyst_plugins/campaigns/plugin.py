"""The campaigns plugin: metadata and hook implementations."""

from __future__ import annotations

from kloyst.api import as_bool, hookimpl, PluginMeta, Setting

plugin_meta = PluginMeta(description="Campaigns: a template to an audience, quoted, paid from the wallet, sent, "
                                     "paused, resumed or cancelled, and tracked.",
                         requires=("contacts", "waba", "templates", "messages", "wallet", "pricing"))
model_modules = ("kloyst_plugins.campaigns.models",)


@hookimpl
def kloyst_settings():
    return [
        Setting("campaigns.chunk_size", "CAMPAIGNS_CHUNK_SIZE", 10_000, int,
                help="Recipients one fan-out task writes as messages in one transaction; chunks run in parallel "
                     "on every worker."),
        Setting("campaigns.tick_seconds", "CAMPAIGNS_TICK_SECONDS", 1.0, float,
                help="How often the campaign loop runs: scheduled starts, completion and settlement, lost "
                     "fan-out tasks."),
        Setting("campaigns.loop_enabled", "CAMPAIGNS_LOOP_ENABLED", True, as_bool,
                help="Run the campaign loop in WORKER and ALL modes (several workers may run it at once)."),
        Setting("campaigns.fanout_stale_seconds", "CAMPAIGNS_FANOUT_STALE_SECONDS", 120.0, float,
                help="A fan-out chunk still not written this long after its task was sent is sent again (its "
                     "task was lost: huey does not acknowledge tasks)."),
    ]


@hookimpl
def kloyst_routes(config):
    config.include(".views")


@hookimpl
def kloyst_tasks():
    from kloyst_plugins.campaigns import tasks

    return [tasks.fan_out_chunk]


@hookimpl
def kloyst_background_services(registry, mode):
    if mode not in ("WORKER", "ALL") or not registry.settings["campaigns.loop_enabled"]:
        return []
    from kloyst_plugins.campaigns.ticker import CampaignLoop

    return [CampaignLoop(registry).start()]
