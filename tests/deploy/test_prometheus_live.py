"""Debian's Prometheus scrapes a running Kloyst under traffic: every dashboard panel shows data, every alert works.

tests/deploy/test_dashboards.py checks that each dashboard query names metrics and labels Kloyst
exports, and test_alert_rules.py fires each alert from synthetic series; neither shows that a
panel has anything to draw once a real Prometheus scrapes real processes (a ``job`` matcher on a
job name the scrape config does not have, a ratio whose two sides never share labels, a
histogram over a route nobody calls all pass those tests and draw nothing). Here:

* the deployment people run — API_GATEWAY, WEBHOOK, WORKER and OUTBOX as separate ``kloyst run``
  processes on PostgreSQL and Redis, the Meta sandbox in a process of its own, a real clamd — is
  scraped every second by Debian's Prometheus with the shipped ``monitoring/prometheus/prometheus.yml``
  (its jobs and rules; only targets and intervals changed, :mod:`kloyst.testing.prometheus`);
* traffic touches what the panels draw: an import with a rejected row, a campaign whose messages are
  sent, delivered and read (and two refused by Meta as undeliverable), a webhook POST with a bad
  signature, API calls answered 4xx. Before Prometheus starts, the same has happened once, and a
  campaign scheduled for tomorrow holds money in the wallet: the scrape-time gauges (cached 30 to 60 s)
  read them at Prometheus's first scrape, and the counters must count what happened before it too
  (:func:`test_what_happened_before_the_first_scrape_counts_too`);
* every Prometheus query of every dashboard, its Grafana variables substituted as Grafana does,
  is evaluated over the traffic as a graph panel asks (``query_range``): an error, or a panel with
  nothing to draw, fails (no panel is excused). Panels that may read a flat 0 on a healthy deployment
  are listed with the reason; every other panel must show the traffic (a value other than 0);
* every rule of ``alerts.yml`` is evaluated by this Prometheus without error, none fires on the
  healthy deployment even with its ``for:`` taken away, and one fires for real: OUTBOX is killed and
  KloystTargetDown fires (from a copy of the rules with ``for: 0s``; the shipped rule goes pending).
"""

from __future__ import annotations

import copy
import csv
import io
import json
import math
import os
import re
import sys
from datetime import datetime, timedelta, timezone
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from test_dashboards import DASHBOARDS, MONITORING, STAGING_COMPOSE, queries

from kloyst import testing
from kloyst.db import session_scope, tenancy
from kloyst.testing.clamd import ClamdServer
from kloyst.testing.deployment import Deployment, Sandbox, http_json
from kloyst.testing.processes import eventually, free_port
from kloyst.testing.prometheus import Prometheus, render, render_config
from kloyst.testing.tls import TlsServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "chaos"))

from chaos_support import (  # noqa: E402
    CALM_NUMBER,
    CHAOS_NUMBER,
    WABA,
    WELCOME_VARIABLES,
    Vendor,
    api,
    arrange_vendor,
    campaign_stats,
    deployment_settings,
    launch_campaign,
    recipient_number,
    registry_for,
    wait_until_quiet,
)

# One process per service mode, as the four real processes; the job each is scraped as comes from the
# staging compose file (the compose service that runs the mode), as on the server.
SERVICES = (("api", "API_GATEWAY"), ("webhook", "WEBHOOK"), ("worker", "WORKER"), ("outbox", "OUTBOX"))
RECIPIENTS = 40
IMPORTED = 3  # contacts the import adds
UNDELIVERABLE = (recipient_number(0), recipient_number(1))  # Meta refuses them at the send: failed, dead letters
SCRAPE_SECONDS = 1
STEP_SECONDS = 2  # a graph panel's resolution ($__interval)
# Grafana's $__rate_interval: max($__interval + the scrape interval, 4 × the scrape interval).
RATE_INTERVAL = f"{max(STEP_SECONDS + SCRAPE_SECONDS, 4 * SCRAPE_SECONDS)}s"
IMMEDIATE_GROUP = "kloyst, for: 0s"

# Panels that read a flat 0 on a healthy deployment under traffic, and why that is right. Every other panel must
# draw a value other than 0 somewhere in the traffic's time range.
ZERO_WHEN_HEALTHY = {
    "kloyst-api / Server errors (5xx) / A": "nothing answers 5xx on a healthy deployment (`or vector(0)` draws 0)",
    "kloyst-pipeline / Dead outbox events / A": "no outbox event fails every attempt",
    "kloyst-pipeline / Oldest due event waiting / A": "the relay publishes each event as it is due, and the gauge "
                                                      "is read every 5 s",
    "kloyst-pipeline / Oldest due event age / A": "the same gauge as 'Oldest due event waiting'",
    "kloyst-pipeline / Pending events / A": "the relay drains the outbox between two reads of the gauge (every 5 s)",
    "kloyst-pipeline / Outbox backlog and publishing / A": "the same gauge as 'Pending events'",
    "kloyst-pipeline / Queue depth / A": "the worker takes each task as soon as it is queued",
    "kloyst-pipeline / Webhook backlog / A": "the drainer applies each stored delivery at once",
    "kloyst-messages / Messages waiting for the sender / A": "a campaign of 43 is sent within a second, and the gauge "
                                                             "is read every 15 s",
}


def job_of_mode() -> dict[str, str]:
    """``{SERVICE_TYPE: compose service}`` from the staging compose file: the job Prometheus scrapes a mode as."""
    services = yaml.safe_load(STAGING_COMPOSE.read_text())["services"]
    return {service["environment"]["SERVICE_TYPE"]: name for name, service in services.items()
            if isinstance(service.get("environment"), dict) and "SERVICE_TYPE" in service["environment"]}


def immediate_rules() -> dict:
    """alerts.yml with every ``for:`` taken away and a label of its own: each alert fires at its first true
    evaluation, beside the shipped rules (which keep theirs)."""
    rules = copy.deepcopy(yaml.safe_load((MONITORING / "prometheus" / "alerts.yml").read_text()))
    [group] = rules["groups"]
    group["name"] = IMMEDIATE_GROUP
    for rule in group["rules"]:
        rule["for"] = "0s"
        rule["labels"] = {**rule.get("labels", {}), "rules": "for-0s"}
    return rules


_GRAFANA_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def grafana_expr(expr: str, variables: dict[str, str]) -> str:
    """``expr`` with its Grafana variables replaced by ``variables`` (an unknown variable fails: Grafana would
    send the ``$name`` as it is, and Prometheus would refuse it or select nothing)."""
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise KeyError(f"{expr}: Grafana variable ${name} is neither built in nor the dashboard's")
        return variables[name]
    return _GRAFANA_VARIABLE.sub(value, expr)


def dashboard_variables(dashboard: dict) -> dict[str, str]:
    """Each variable as the dashboards open: "All", which is the variable's allValue."""
    found = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            assert variable["current"]["value"] == ["$__all"] and variable.get("allValue"), variable["name"]
            found[variable["name"]] = variable["allValue"]
    return found


@dataclass
class Live:
    prometheus: Prometheus
    deployment: Deployment
    vendor: Vendor
    traffic_started: float  # time.time(), when Prometheus started
    engine: object  # the deployment's database


def multipart(filename: str, content: bytes, content_type: str) -> tuple[bytes, str]:
    boundary = f"kloyst-{uuid.uuid4().hex}"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\n"
            f"Content-Type: {content_type}\r\n\r\n").encode() + content + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def import_contacts(deployment: Deployment, vendor: Vendor) -> dict:
    """A CSV of new contacts and one row that is no phone number, uploaded, scanned, mapped and imported."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["phone", "name"])
    for index in range(IMPORTED):
        writer.writerow([f"+120255501{index:02d}", f"Imported {index}"])
    writer.writerow(["not a number", "Broken"])
    body, content_type = multipart("contacts.csv", out.getvalue().encode(), "text/csv")
    request = urllib.request.Request(f"{deployment.api_url}/v1/imports", data=body, method="POST",
                                     headers={**vendor.headers, "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            job = json.loads(response.read())["import"]
    except urllib.error.HTTPError as error:
        raise AssertionError(f"upload: {error.code} {error.read()[:2000]!r}") from None
    path = f"/imports/{job['id']}"
    eventually(lambda: api(deployment, "GET", path, vendor.headers)["import"]["status"],
               lambda status: status == "AWAITING_MAPPING", "the upload to be scanned and read", 60, pause=0.2)
    api(deployment, "PUT", f"{path}/mapping", vendor.headers,
        {"columns": {"phone": "phone", "name": "name"}, "merge_strategy": "MERGE_LABELS"})
    return eventually(lambda: api(deployment, "GET", path, vendor.headers)["import"],
                      lambda job: job["finished_at"] is not None, "the import to finish", 60, pause=0.2)


def campaign(deployment: Deployment, sandbox: Sandbox, vendor: Vendor, engine, name: str, contacts: int) -> None:
    """A campaign to every contact, watched until it completed and Meta's last status was applied: each message
    read, but those to the undeliverable numbers, which failed."""
    campaign_id = launch_campaign(deployment, vendor, CALM_NUMBER, name)
    eventually(lambda: campaign_stats(deployment, vendor, campaign_id), lambda s: s["status"] == "COMPLETED",
               f"campaign {name} to complete", 90, pause=0.5)
    wait_until_quiet(deployment, sandbox, engine, timeout=60)
    counts = campaign_stats(deployment, vendor, campaign_id)["counts"]
    assert {status: n for status, n in counts.items() if n} == {
        "read": contacts - len(UNDELIVERABLE), "failed": len(UNDELIVERABLE)}, counts


def scheduled_campaign(deployment: Deployment, vendor: Vendor) -> None:
    """A campaign launched for tomorrow: its price is held from the launch on (an open hold the wallet shows)."""
    tomorrow = (datetime.now(timezone.utc) + timedelta(days=1)).replace(microsecond=0).isoformat()
    created = api(deployment, "POST", "/campaigns", vendor.headers, {
        "name": "Tomorrow", "template_id": vendor.template_id, "phone_number_id": vendor.phone_numbers[CALM_NUMBER],
        "audience": {"all": True}, "variables": WELCOME_VARIABLES, "schedule": {"start_at": tomorrow}})
    campaign_id = created["campaign"]["id"]
    api(deployment, "POST", f"/campaigns/{campaign_id}/quote", vendor.headers)
    launched = api(deployment, "POST", f"/campaigns/{campaign_id}/launch", vendor.headers,
                   extra_headers={"Idempotency-Key": f"launch-{campaign_id}"}, expect=202)
    assert launched["campaign"]["status"] == "SCHEDULED", launched


def refused_calls(deployment: Deployment, vendor: Vendor) -> None:
    """A webhook POST with a bad signature (401) and API calls answered 404 and 401."""
    status, _ = http_json(deployment.webhook_url, {"object": "whatsapp_business_account", "entry": []},
                          headers={"X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert status == 401
    api(deployment, "GET", f"/campaigns/{uuid.uuid4()}", vendor.headers, expect=404)
    api(deployment, "GET", "/contacts", {}, expect=401)


def has_run_for_a_while(deployment: Deployment, sandbox: Sandbox, vendor: Vendor, engine) -> None:
    """Traffic before Prometheus starts, as on a server that has been running when the dashboards are opened.

    The scrape-time gauges (cached 30 to 60 s) then read the wallet, its hold for a campaign scheduled
    for tomorrow and the dead letters at Prometheus's first scrape. The counters' series are all new to
    Prometheus then, born with these counts in them; Prometheus takes a series' first sample as its
    start, so each is shown at 0 in the first scrape that sees it (kloyst.metrics.server.NewSeriesStartAtZero)
    and these counts still show as a rise.
    """
    campaign(deployment, sandbox, vendor, engine, "First", RECIPIENTS)
    scheduled_campaign(deployment, vendor)
    refused_calls(deployment, vendor)


def drive_traffic(deployment: Deployment, sandbox: Sandbox, vendor: Vendor, engine) -> None:
    """What the panels draw: an import, a campaign with every outcome, a bad webhook signature, 4xx answers."""
    job = import_contacts(deployment, vendor)
    counts = job["counts"]
    assert (job["status"], counts["created"], counts["rejected"]) == ("PARTIAL_SUCCESS", IMPORTED, 1), json.dumps(job)
    campaign(deployment, sandbox, vendor, engine, "Under the dashboards", RECIPIENTS + IMPORTED)
    refused_calls(deployment, vendor)


def scraped_after(prometheus: Prometheus, moment: float) -> None:
    """Wait until Prometheus scraped every target after ``moment`` (a ``time.time()``)."""
    eventually(prometheus.targets, lambda found: len(found) == len(SERVICES) + 1 and all(
        t["health"] == "up" and _timestamp(t["lastScrape"]) > moment for t in found),
        "a scrape of every target", 30, pause=0.2)


@pytest.fixture(scope="module")
def live(tmp_path_factory, kloyst_redis_url):
    name = f"{testing.database_prefix()}_prometheus_{os.getpid()}"  # two runs side by side never share it
    database_url = testing.create_database(name)
    directory = tmp_path_factory.mktemp("prometheus-live")
    clamd = ClamdServer(directory / "clamd")
    # The certificate nginx would serve, 60 days from its end: the OUTBOX process probes it.
    certificate = TlsServer(directory / "tls", datetime.now(timezone.utc) + timedelta(days=60)).start()
    sandbox_port = free_port()
    deployment = sandbox = prometheus = registry = None
    try:
        clamd.start()
        deployment = Deployment.from_settings(directory / "kloyst", deployment_settings(
            database_url, kloyst_redis_url, f"http://127.0.0.1:{sandbox_port}", **{
                "imports.clamd_address": clamd.address,
                "wallet.check_interval_seconds": "1",  # the wallet check's gauges within the traffic window
                "kloyst.metrics.tls_probe_targets": certificate.target}))
        for service, mode in SERVICES:
            deployment.add(service, mode)
        for command in (("db", "upgrade"), ("pricing", "load-card", "--development")):
            done = deployment.cli(*command)
            assert done.returncode == 0, done.stdout + done.stderr
        sandbox = Sandbox(deployment.ini, directory / "sandbox.log", numbers={CALM_NUMBER: 1000, CHAOS_NUMBER: 80},
                          waba=WABA, port=sandbox_port, latency_ms=20, webhook_url=deployment.webhook_url).start()
        sandbox.api("undeliverable", {"recipients": list(UNDELIVERABLE)})
        deployment.start()
        registry = registry_for(deployment)
        engine = registry["kloyst.engine"]
        vendor = arrange_vendor(deployment, registry, RECIPIENTS, name="Monitored Co")
        with session_scope(registry["kloyst.session_factory"], vendor_id=tenancy.ALL_VENDORS) as db:
            testing.enable_plugin(db, vendor.vendor_id, "imports")
        has_run_for_a_while(deployment, sandbox, vendor, engine)

        jobs = job_of_mode()
        targets: dict[str, list[str]] = {}
        for service in deployment.services.values():
            targets.setdefault(jobs[service.mode], []).append(f"127.0.0.1:{service.metrics_port}")
        shipped = MONITORING / "prometheus" / "prometheus.yml"
        prometheus = render(yaml.safe_load(shipped.read_text()), shipped.parent, directory / "prometheus",
                            targets=targets, extra_rules={"immediate.yml": immediate_rules()},
                            interval=f"{SCRAPE_SECONDS}s").start()
        started = time.time()
        scraped_after(prometheus, started + SCRAPE_SECONDS)  # two scrapes: what rate() starts from
        drive_traffic(deployment, sandbox, vendor, engine)
        ended = time.time()
        # A rate window past the last request, so the last of the traffic is in every panel.
        scraped_after(prometheus, ended + 4 * SCRAPE_SECONDS)
        yield Live(prometheus, deployment, vendor, started, engine)
    finally:
        if prometheus is not None:
            prometheus.stop()
        if deployment is not None:
            deployment.kill_all()
        if sandbox is not None:
            sandbox.stop()
        clamd.stop()
        certificate.stop()
        if registry is not None:
            registry["kloyst.engine"].dispose()
        testing.drop_database(name)


def _timestamp(rfc3339: str) -> float:
    return datetime.fromisoformat(re.sub(r"(\.\d{6})\d*", r"\1", rfc3339.replace("Z", "+00:00"))).timestamp()


def finite(series: list[dict]) -> list[float]:
    return [float(value) for one in series for _, value in one["values"] if math.isfinite(float(value))]


def scrape_health(prometheus: Prometheus, seconds: int) -> dict:
    """Per job: failed scrapes and the slowest scrape over the last ``seconds`` (a panel with gaps says why)."""
    def per_job(expr: str) -> dict:
        return {sample["metric"]["job"]: sample["value"][1] for sample in prometheus.query(expr)}
    return {"failed": per_job(f"sum by (job) (count_over_time((up == 0)[{seconds}s:]))"),
            "scrapes": per_job(f"sum by (job) (count_over_time(up[{seconds}s]))"),
            "slowest": per_job(f"max by (job) (max_over_time(scrape_duration_seconds[{seconds}s]))")}


def test_every_dashboard_panel_evaluates_and_draws_the_traffic(live):
    start, end = live.traffic_started, time.time()
    errors, empty, flat = [], [], []
    checked = set()
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        variables = {**dashboard_variables(dashboard), "__rate_interval": RATE_INTERVAL,
                     "__interval": f"{STEP_SECONDS}s", "__range": f"{math.ceil(end - start)}s"}
        for where, expr in queries(dashboard, "prometheus"):
            checked.add(where)
            try:
                values = finite(live.prometheus.query_range(grafana_expr(expr, variables), start, end, STEP_SECONDS))
            except Exception as exc:
                errors.append(f"{where}: {exc}")
                continue
            if not values:
                empty.append(where)
            elif where not in ZERO_WHEN_HEALTHY and not any(values):
                flat.append(where)
    assert set(ZERO_WHEN_HEALTHY) <= checked, set(ZERO_WHEN_HEALTHY) - checked
    assert (errors, empty, flat) == ([], [], []), (
        f"errors: {errors}\npanels with nothing to draw: {empty}\npanels flat at 0 under traffic: {flat}\n"
        f"scrapes: {scrape_health(live.prometheus, math.ceil(end - start))}")


def test_what_happened_before_the_first_scrape_counts_too(live):
    """Every read the WEBHOOK process applied is a rise of its counter, those before Prometheus's first scrape too.

    The vendor's series was born with the first campaign's reads in it, before Prometheus ever scraped the
    process; exposed at that value, it would have been the series' start, and the first campaign would
    count for nothing in rate() and increase().
    """
    window = f"{math.ceil(time.time() - live.traffic_started) + 5}s"
    series = f'kloyst_message_status_total{{status="read",source="webhook",vendor="{live.vendor.vendor_id}"}}'
    [rise] = live.prometheus.query(f"sum(max_over_time({series}[{window}]) - min_over_time({series}[{window}]))")
    with live.engine.connect() as connection:
        read = connection.scalar(sa.text("SELECT count(*) FROM message_log WHERE read_at IS NOT NULL"))
    assert read > RECIPIENTS and float(rise["value"][1]) == read


def test_every_dashboard_variable_offers_values(live):
    problems = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        variables = dashboard_variables(dashboard)
        for variable in dashboard.get("templating", {}).get("list", []):
            if variable["type"] != "query" or not isinstance(variable["query"], str):
                continue  # a Loki variable: nothing of Prometheus's
            selector, label = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", variable["query"]).groups()
            found = live.prometheus.api(f"label/{label}/values", **{"match[]": grafana_expr(selector, variables)})
            if not found:
                problems.append(f"{dashboard['uid']} ${variable['name']}: {variable['query']}")
    assert problems == []


def test_the_vendor_variable_lists_the_vendor_that_sent(live):
    assert str(live.vendor.vendor_id) in live.prometheus.api("label/vendor/values")


def test_every_alert_rule_is_evaluated_without_error(live):
    shipped = [rule["alert"] for group in yaml.safe_load((MONITORING / "prometheus" / "alerts.yml").read_text())[
        "groups"] for rule in group["rules"]]
    groups = {group["name"]: group for group in live.prometheus.rule_groups()}
    assert set(groups) == {"kloyst", IMMEDIATE_GROUP}
    for group in groups.values():
        assert [rule["name"] for rule in group["rules"]] == shipped
        for rule in group["rules"]:
            assert rule["health"] == "ok" and not rule.get("lastError"), (group["name"], rule)


def test_the_relay_checks_the_wallets_and_prometheus_reads_that_they_agree(live):
    [violations] = live.prometheus.query('kloyst_wallet_check_violations{job="outbox-relay"}')
    [finished] = live.prometheus.query("time() - kloyst_wallet_check_last_success_timestamp_seconds")
    assert float(violations["value"][1]) == 0 and float(finished["value"][1]) < 60


def test_the_relay_probes_the_certificate_and_prometheus_reads_when_it_expires(live):
    [expiry] = live.prometheus.query('kloyst_tls_certificate_expiry_timestamp_seconds{job="outbox-relay"} - time()')
    [success] = live.prometheus.query('kloyst_tls_probe_success{job="outbox-relay"}')
    assert 59 * 86400 < float(expiry["value"][1]) < 60 * 86400 and float(success["value"][1]) == 1


def test_no_alert_fires_on_a_healthy_deployment_even_without_its_wait(live):
    for group in live.prometheus.rule_groups():
        active = [(rule["name"], rule["state"], rule["alerts"]) for rule in group["rules"]
                  if rule["state"] != "inactive"]
        assert active == [], group["name"]


def test_a_dead_relay_fires_target_down(live):
    """Runs last: it kills OUTBOX. Prometheus's scrape of it fails, and the alert fires (the shipped rule, which
    waits 2 minutes, is pending)."""
    outbox = next(s for s in live.deployment.services.values() if s.mode == "OUTBOX")
    outbox.kill()
    job = job_of_mode()["OUTBOX"]

    def target_down() -> dict:
        return {group["name"]: rule for group in live.prometheus.rule_groups() for rule in group["rules"]
                if rule["name"] == "KloystTargetDown"}

    rules = eventually(target_down, lambda r: r["kloyst"]["state"] == "pending" and r[IMMEDIATE_GROUP]["state"] ==
                       "firing", "KloystTargetDown to fire", 30, pause=0.5)
    [alert] = rules[IMMEDIATE_GROUP]["alerts"]
    assert alert["labels"]["job"] == job and alert["labels"]["instance"] == f"127.0.0.1:{outbox.metrics_port}"
    assert alert["labels"]["severity"] == "page" and alert["annotations"]["runbook_url"].startswith("docs/")


def test_the_render_keeps_the_shipped_jobs_and_refuses_one_it_does_not_have():
    shipped = yaml.safe_load((MONITORING / "prometheus" / "prometheus.yml").read_text())
    targets = {job: [f"127.0.0.1:{9000 + index}"] for index, job in enumerate(sorted(job_of_mode().values()))}
    rendered = render_config(shipped, targets=targets, rule_files=[Path("/rules.yml")], port=9999)
    jobs = {job["job_name"]: job for job in rendered["scrape_configs"]}
    assert set(jobs) == {job["job_name"] for job in shipped["scrape_configs"]}
    assert {name: job["static_configs"] for name, job in jobs.items()} == {
        **{name: [{"targets": found}] for name, found in targets.items()},
        "prometheus": [{"targets": ["127.0.0.1:9999"]}]}
    assert not any(key.endswith("_sd_configs") for job in jobs.values() for key in job)
    with pytest.raises(ValueError, match="not in the shipped prometheus.yml"):
        render_config(shipped, targets={**targets, "worker": ["127.0.0.1:1"]}, rule_files=[], port=9999)
    with pytest.raises(ValueError, match="gave them no target"):
        render_config(shipped, targets={"webhook": ["127.0.0.1:1"]}, rule_files=[], port=9999)
