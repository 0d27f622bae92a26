"""A campaign reaches every recipient, once wherever Kloyst could know better, with every process killed on the way.

The deployment of :mod:`conftest`: API_GATEWAY, WEBHOOK, two WORKERs and OUTBOX, each its own
process, on PostgreSQL and Redis, with the Meta sandbox in a process of its own. What must hold
after a run (:func:`chaos_support.verdict`), from the database and from what the sandbox itself
accepted: every recipient reached; no duplicate send whose earlier send's status had already
reached Kloyst; every duplicate counted; every stored status applied (``kloyst messages
check``); no outbox event left; the wallet equal to its ledger (``kloyst wallet check``) and
every message's price captured or released exactly once; the stats API equal to the SQL counts.
The fault schedule is drawn from ``KLOYST_CHAOS_SEED`` (printed; set it to replay a run).
"""

from __future__ import annotations

import time

import pytest
import redis
import sqlalchemy as sa
from chaos_support import (
    CALM_NUMBER,
    CHAOS_NUMBER,
    CHAOS_SEED,
    RECIPIENTS,
    campaign_stats,
    chaos_schedule,
    dump,
    duplicates_per_kill,
    eventually,
    launch_campaign,
    run_faults,
    verdict,
    wait_until_quiet,
)

pytestmark = pytest.mark.slow


@pytest.mark.direct_too
def test_without_faults_every_recipient_gets_one_send_and_every_status_is_applied(chaos):
    campaign_id = launch_campaign(chaos.deployment, chaos.vendor, CALM_NUMBER, "Calm")
    eventually(lambda: campaign_stats(chaos.deployment, chaos.vendor, campaign_id)["status"],
               lambda status: status == "COMPLETED", "the campaign to complete", 180, pause=1.0)
    wait_until_quiet(chaos.deployment, chaos.sandbox, chaos.engine)
    result = verdict(chaos.deployment, chaos.sandbox, chaos.engine, chaos.vendor, campaign_id, CALM_NUMBER,
                     RECIPIENTS)
    assert result.problems(allow_unprevented_duplicates=False) == []
    assert (result.sends, result.duplicate_sends) == (RECIPIENTS, 0)
    # Meta reported sent, delivered and read for every message; each report was applied.
    assert result.counts == {"read": RECIPIENTS}


def test_every_process_killed_and_redis_flushed_mid_campaign_lose_nothing_and_duplicate_only_the_unknowable(
        chaos, capsys):
    deployment = chaos.deployment
    faults = chaos_schedule(CHAOS_SEED)
    print(f"chaos seed {CHAOS_SEED}: {[(f.at, f.action, f.target) for f in faults]}")
    fan_out_done_at_kill = []

    def after(fault, _when) -> None:
        if fault.action == "kill" and fault.target == "outbox":
            with chaos.engine.connect() as conn:
                fan_out_done_at_kill.append(conn.execute(sa.text(
                    "SELECT fanout_completed_at IS NOT NULL FROM campaign WHERE id = :c"), {"c": campaign_id}).scalar())

    campaign_id = launch_campaign(deployment, chaos.vendor, CHAOS_NUMBER, "Chaos")
    log = run_faults(deployment, faults, time.monotonic(), chaos.redis_url, after=after)
    assert fan_out_done_at_kill == [False], "OUTBOX was to be killed while the fan-out ran"
    eventually(lambda: campaign_stats(deployment, chaos.vendor, campaign_id)["status"],
               lambda status: status == "COMPLETED", "the campaign to complete within 60 s of the last restart",
               timeout=max(1.0, log.last_restart + 60 - time.time()), pause=1.0)
    wait_until_quiet(deployment, chaos.sandbox, chaos.engine)
    result = verdict(deployment, chaos.sandbox, chaos.engine, chaos.vendor, campaign_id, CHAOS_NUMBER, RECIPIENTS)
    blame = duplicates_per_kill(chaos.sandbox, chaos.engine, campaign_id, CHAOS_NUMBER, log)
    print(f"duplicate sends (calls whose answer and status never reached Kloyst before the re-send): "
          f"{result.duplicate_sends}, after each kill: {dict(blame)}; messages taken back from dead senders: "
          f"{result.taken_back}; outcome: {result.counts}")
    problems = result.problems(allow_unprevented_duplicates=True)
    if problems:
        dump(chaos.directory / "verdict.json", verdict=result.summary(), faults=log.done)
    assert problems == [], f"seed {CHAOS_SEED}; logs and verdict.json in {chaos.directory}"
    # Every process still stops cleanly after all that, and comes back.
    assert set(deployment.stop().values()) == {0}
    deployment.start()
    redis.Redis.from_url(chaos.redis_url).ping()
