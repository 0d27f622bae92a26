"""The embedded default (development.ini: SQLite, one ALL process) SIGKILLed mid-campaign resumes, and keeps the
same promises as the full deployment: every recipient reached, duplicates only where Kloyst could not know, every
status applied, the wallet equal to its ledger."""

from __future__ import annotations

import random
import shutil
import time
from pathlib import Path

import pytest
from chaos_support import (
    CALM_NUMBER,
    CHAOS_NUMBER,
    CHAOS_SEED,
    WABA,
    Fault,
    arrange_vendor,
    campaign_stats,
    duplicates_per_kill,
    eventually,
    launch_campaign,
    registry_for,
    run_faults,
    verdict,
    wait_until_quiet,
)

from kloyst.testing.deployment import Deployment, Sandbox
from kloyst.testing.processes import free_port

pytestmark = pytest.mark.slow

REPO_INI = Path(__file__).resolve().parents[2] / "development.ini"
RECIPIENTS = 1000  # 13 s at the 80-mps number's pace


def test_the_embedded_default_killed_mid_campaign_resumes_and_keeps_every_promise(tmp_path):
    ini = tmp_path / "development.ini"
    shutil.copy(REPO_INI, ini)
    deployment = Deployment(ini)
    sandbox_port = free_port()
    # Meta is remote, so it survives the kill: the sandbox runs in its own process, not inside ALL.
    deployment.add("all", "ALL", META_EMBEDDED_SANDBOX="false", META_GRAPH_URL=f"http://127.0.0.1:{sandbox_port}")
    sandbox = Sandbox(ini, tmp_path / "sandbox.log", numbers={CALM_NUMBER: 1000, CHAOS_NUMBER: 80}, waba=WABA,
                      port=sandbox_port, latency_ms=100, webhook_url=deployment.webhook_url, retry_max_interval=2.0)
    registry = None
    try:
        sandbox.start()
        deployment.start()
        registry = registry_for(deployment)
        vendor = arrange_vendor(deployment, registry, RECIPIENTS, name="Embedded Co")
        rng = random.Random(CHAOS_SEED)
        kill_at = round(rng.uniform(3.0, 6.0), 2)
        faults = [Fault(kill_at, "kill", "all"), Fault(round(kill_at + rng.uniform(3, 5), 2), "start", "all")]
        campaign_id = launch_campaign(deployment, vendor, CHAOS_NUMBER, "Embedded chaos")
        log = run_faults(deployment, faults, time.monotonic(), redis_url="")
        eventually(lambda: campaign_stats(deployment, vendor, campaign_id)["status"],
                   lambda status: status == "COMPLETED", "the campaign to complete within 60 s of the restart",
                   timeout=max(1.0, log.last_restart + 60 - time.time()), pause=1.0)
        engine = registry["kloyst.engine"]
        wait_until_quiet(deployment, sandbox, engine)
        result = verdict(deployment, sandbox, engine, vendor, campaign_id, CHAOS_NUMBER, RECIPIENTS)
        blame = duplicates_per_kill(sandbox, engine, campaign_id, CHAOS_NUMBER, log)
        print(f"embedded: {result.duplicate_sends} duplicate sends after the kill ({dict(blame)}); "
              f"outcome {result.counts}")
        assert result.problems(allow_unprevented_duplicates=True) == [], f"logs in {tmp_path}"
        assert deployment["all"].terminate() == 0
    finally:
        deployment.kill_all()
        sandbox.stop()
        if registry is not None:
            registry["kloyst.engine"].dispose()
