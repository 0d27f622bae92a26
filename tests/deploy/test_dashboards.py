"""The monitoring stack reads only what Kloyst really exports, and its files agree with each other.

* Every PromQL expression of every Grafana dashboard names only metrics the application
  exports — the core's and every installed plugin's (``Metrics.catalogue``) — with label
  matchers and groupings on labels those metrics have. A renamed metric fails here instead
  of leaving an empty panel on staging.
* Dashboards name only the provisioned data sources; LogQL selects only labels Promtail sets;
  Promtail's JSON stage reads fields Kloyst's log lines have.
* The compose file, Prometheus, Promtail and Loki configurations parse, and the scrape targets,
  network and log volume are the ones docker/docker-compose.staging.yml declares.
* docs/dashboards.md lists every metric and every dashboard.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import yaml

from kloyst import metrics as kmetrics

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "monitoring"
DASHBOARDS = sorted((MONITORING / "grafana" / "dashboards").glob("*.json"))
STAGING_COMPOSE = ROOT / "docker" / "docker-compose.staging.yml"
DOCS = ROOT / "docs" / "dashboards.md"

# Series Prometheus adds to every target itself.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped", "scrape_series_added",
                     "scrape_samples_post_metric_relabeling"}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every series it scrapes
PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or",
                   "unless", "atan2", "inf", "nan", "Inf", "NaN"}


def load_yaml(path: Path):
    return yaml.safe_load(path.read_text())


# -- PromQL ------------------------------------------------------------------------------------------------

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"' + r"|'(?:[^'\\]|\\.)*'|`[^`]*`")
_VARIABLE = re.compile(r"\$\{?\w+(?::\w+)?\}?")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_SELECTOR = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^{}]*)\}")
_MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)\s*(?:\"(?:[^\"\\]|\\.)*\"|'[^']*')")
_IDENTIFIER = re.compile(r"(?<![\w:.])([A-Za-z_:][A-Za-z0-9_:]*)")
_NUMBER = re.compile(r"(?<![\w:])\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|s|m|h|d|w|y)?(?![\w:])")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: identifiers left once strings, Grafana variables, label
    matchers, ranges, grouping label lists, numbers, functions and keywords are taken out."""
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub(" ", text)
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    text = _NUMBER.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group(1)
        if text[match.end():].lstrip().startswith("(") or word in PROMQL_KEYWORDS:
            continue  # a function or an aggregation, or an operator word
        names.add(word)
    return names


def selected_labels(expr: str) -> dict[str, set[str]]:
    """``{metric: label names in its matchers}`` for each ``metric{…}`` selector."""
    found: dict[str, set[str]] = {}
    for metric, matchers in _SELECTOR.findall(_VARIABLE.sub("x", expr)):
        found.setdefault(metric, set()).update(_MATCHER.findall(matchers))
    return found


def grouping_labels(expr: str) -> set[str]:
    text = _STRING.sub('""', expr)
    return {label.strip() for _, labels in _GROUPING.findall(text) for label in labels.split(",") if label.strip()}


def variable_metric(query) -> str | None:
    """The metric of a Grafana ``label_values(metric{…}, label)`` variable query (None for other queries)."""
    text = query.get("query", "") if isinstance(query, dict) else str(query or "")
    match = re.match(r"\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)", text)
    return match.group(1) if match else None


# -- the dashboards ----------------------------------------------------------------------------------------


def panels(dashboard: dict):
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])  # a collapsed row keeps its panels inside


def _type_of(datasource) -> str | None:
    return datasource.get("type") if isinstance(datasource, dict) else None


def queries(dashboard: dict, kind: str) -> list[tuple[str, str]]:
    """``(where, expression)`` of every target whose data source is of ``kind`` (prometheus or loki)."""
    found = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            if (_type_of(target.get("datasource")) or _type_of(panel.get("datasource"))) == kind:
                found.append((f"{dashboard['uid']} / {panel['title']} / {target.get('refId')}", target["expr"]))
    return found


@pytest.fixture(scope="module")
def catalogue(registry):
    """``{sample name: MetricInfo}`` of everything the application exports, every installed plugin included."""
    return {sample: info for info in kmetrics.of(registry).catalogue() for sample in info.samples}


def unknown_metrics(expr: str, catalogue) -> set[str]:
    return {name for name in metric_names(expr) if name not in catalogue and name not in PROMETHEUS_SERIES}


def label_problems(expr: str, catalogue) -> list[str]:
    problems = []
    allowed_everywhere = set(TARGET_LABELS)
    used = [catalogue[name] for name in metric_names(expr) if name in catalogue]
    for metric, labels in selected_labels(expr).items():
        if metric not in catalogue:
            continue
        known = set(catalogue[metric].labels) | allowed_everywhere | ({"le"} if metric.endswith("_bucket") else set())
        problems += [f"{metric} has no label {label!r}" for label in sorted(labels - known)]
    known_anywhere = allowed_everywhere | {"le"} | {label for info in used for label in info.labels}
    problems += [f"grouping by {label!r}, which no metric of the expression has"
                 for label in sorted(grouping_labels(expr) - known_anywhere)]
    return problems


def test_there_are_dashboards_for_what_operators_watch():
    uids = {json.loads(path.read_text())["uid"] for path in DASHBOARDS}
    assert {"kloyst-api", "kloyst-messages", "kloyst-pipeline", "kloyst-wallet", "kloyst-logs"} <= uids


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_a_dashboard_is_grafana_json_with_a_uid_a_title_and_placed_panels(path):
    dashboard = json.loads(path.read_text())
    assert dashboard["uid"] == path.stem and dashboard["title"].startswith("Kloyst")
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["panels"]
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]) and panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24
        if panel["type"] != "row":
            assert panel["title"] and panel["targets"], panel
            assert all(target.get("expr") and target.get("refId") for target in panel["targets"])


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_promql_query_names_only_metrics_the_app_exports(path, catalogue):
    dashboard = json.loads(path.read_text())
    problems = [f"{where}: {sorted(names)}" for where, expr in queries(dashboard, "prometheus")
                if (names := unknown_metrics(expr, catalogue))]
    for variable in dashboard.get("templating", {}).get("list", []):
        metric = variable_metric(variable["query"]) if _type_of(variable.get("datasource")) == "prometheus" else None
        if metric and metric not in catalogue:
            problems.append(f"variable {variable['name']}: {metric}")
    assert problems == [], "dashboards query metrics Kloyst does not export:\n" + "\n".join(problems)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_promql_query_matches_and_groups_on_labels_its_metrics_have(path, catalogue):
    dashboard = json.loads(path.read_text())
    problems = [f"{where}: {problem}" for where, expr in queries(dashboard, "prometheus")
                for problem in label_problems(expr, catalogue)]
    assert problems == [], "\n".join(problems)


def test_the_extractor_finds_what_a_query_selects_and_nothing_else():
    expr = ('histogram_quantile(0.95, sum by (le, route) (rate(kloyst_http_request_duration_seconds_bucket'
            '{job=~"$job", route!~"ops[.].*"}[$__rate_interval]))) / clamp_min(sum(rate(kloyst_x_total[5m] '
            'offset 1h)) without (instance), 1e-9) > bool 0.5 and on(job) up')
    assert metric_names(expr) == {"kloyst_http_request_duration_seconds_bucket", "kloyst_x_total", "up"}
    assert selected_labels(expr) == {"kloyst_http_request_duration_seconds_bucket": {"job", "route"}}
    assert grouping_labels(expr) == {"le", "route", "instance", "job"}


def test_a_query_naming_a_metric_the_app_does_not_export_is_caught(catalogue):
    wrong = 'sum by (vendor) (rate(kloyst_messages_sent_total{vendor=~"$vendor"}[5m])) / kloyst_queue_depth'
    assert unknown_metrics(wrong, catalogue) == {"kloyst_messages_sent_total"}
    # A histogram is queried through its series, a counter through _total: the bare names are not exported.
    assert unknown_metrics("kloyst_http_request_duration_seconds + kloyst_message_status", catalogue) == {
        "kloyst_http_request_duration_seconds", "kloyst_message_status"}
    assert label_problems('kloyst_queue_depth{vendor="x"}', catalogue) == ["kloyst_queue_depth has no label 'vendor'"]
    assert label_problems("sum by (vendr) (kloyst_message_status_total)", catalogue) == [
        "grouping by 'vendr', which no metric of the expression has"]


# -- data sources, Loki and Promtail ----------------------------------------------------------------------


def provisioned_datasources() -> dict[str, str]:
    config = load_yaml(MONITORING / "grafana" / "provisioning" / "datasources" / "datasources.yml")
    return {source["uid"]: source["type"] for source in config["datasources"]}


def _datasources(node):
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            yield node["datasource"]
        for value in node.values():
            yield from _datasources(value)
    elif isinstance(node, list):
        for value in node:
            yield from _datasources(value)


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboards_name_only_provisioned_data_sources_by_uid_and_type(path):
    provisioned = provisioned_datasources()
    used = {(source.get("uid"), source.get("type")) for source in _datasources(json.loads(path.read_text()))
            if source.get("type") != "grafana"}
    assert used and all(provisioned.get(uid) == kind for uid, kind in used), (used, provisioned)


def test_the_provisioned_data_sources_point_at_the_compose_services():
    config = load_yaml(MONITORING / "grafana" / "provisioning" / "datasources" / "datasources.yml")
    services = load_yaml(MONITORING / "docker-compose.monitoring.yml")["services"]
    for source in config["datasources"]:
        host = re.match(r"https?://([^:/]+)", source["url"]).group(1)
        assert host in services, source
    providers = load_yaml(MONITORING / "grafana" / "provisioning" / "dashboards" / "dashboards.yml")["providers"]
    grafana_mounts = services["grafana"]["volumes"]
    assert any(mount.startswith("./grafana/dashboards:" + providers[0]["options"]["path"]) for mount in grafana_mounts)


def promtail_labels() -> set[str]:
    """Every label Promtail can put on a stream: static labels, relabel targets, labels stages, and filename."""
    config = load_yaml(MONITORING / "promtail" / "promtail-config.yml")
    labels = {"filename"}  # promtail adds it to every file it tails
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            labels |= {name for name in static.get("labels", {}) if not name.startswith("__")}
        labels |= {rule["target_label"] for rule in job.get("relabel_configs", []) if "target_label" in rule}
        for stage in job.get("pipeline_stages", []):
            labels |= set(stage.get("labels") or {})
    return labels


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_logql_queries_select_only_labels_promtail_sets(path):
    dashboard = json.loads(path.read_text())
    selections = [expr for _, expr in queries(dashboard, "loki")]
    for variable in dashboard.get("templating", {}).get("list", []):
        if _type_of(variable.get("datasource")) == "loki":
            selections.append(variable["query"]["stream"])
            assert variable["query"]["label"] in promtail_labels()
    labels = {name for expr in selections for selector in re.findall(r"\{([^{}]*)\}", _VARIABLE.sub("x", expr))
              for name in _MATCHER.findall(selector)}
    assert labels <= promtail_labels(), labels - promtail_labels()


def test_promtail_tails_the_containers_and_the_kloyst_log_files_with_their_labels():
    config = load_yaml(MONITORING / "promtail" / "promtail-config.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    docker = jobs["docker"]
    assert docker["docker_sd_configs"][0]["host"] == "unix:///var/run/docker.sock"
    service = [r for r in docker["relabel_configs"] if r.get("target_label") == "service"]
    assert service[0]["source_labels"] == ["__meta_docker_container_label_com_docker_compose_service"]
    files = jobs["kloyst-files"]
    assert files["static_configs"][0]["labels"]["__path__"] == "/var/log/kloyst/*.log"
    stages = {key: value for stage in files["pipeline_stages"] for key, value in stage.items()}
    assert {"kind", "service", "level"} <= set(stages["json"]["expressions"]) and {"kind", "service", "level"} <= set(
        stages["labels"])
    mounts = load_yaml(MONITORING / "docker-compose.monitoring.yml")["services"]["promtail"]["volumes"]
    assert "kloyst-logs:/var/log/kloyst:ro" in mounts and "/var/run/docker.sock:/var/run/docker.sock:ro" in mounts


def test_kloyst_log_lines_carry_the_fields_promtail_reads():
    from kloyst.logs import JsonFormatter

    config = load_yaml(MONITORING / "promtail" / "promtail-config.yml")
    [files] = [job for job in config["scrape_configs"] if job["job_name"] == "kloyst-files"]
    stages = {key: value for stage in files["pipeline_stages"] for key, value in stage.items()}
    record = logging.makeLogRecord({"name": "kloyst.test", "levelname": "WARNING", "levelno": 30, "msg": "hello"})
    line = json.loads(JsonFormatter("app", service="WORKER").format(record))
    assert set(stages["json"]["expressions"].values()) <= set(line)
    assert (line["kind"], line["service"], line["level"]) == ("app", "WORKER", "WARNING")
    # RFC3339 with a fraction and a numeric zone: what the timestamp stage's RFC3339Nano layout parses.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+\+00:00", line[stages["timestamp"]["source"]])


def test_loki_and_prometheus_configurations_parse():
    loki = load_yaml(MONITORING / "loki" / "loki-config.yml")
    assert loki["server"]["http_listen_port"] == 3100 and loki["auth_enabled"] is False
    assert loki["limits_config"]["retention_period"] and loki["compactor"]["retention_enabled"] is True
    prometheus = load_yaml(MONITORING / "prometheus" / "prometheus.yml")
    assert {"api-gateway", "webhook", "worker-pool", "outbox-relay"} <= {j["job_name"] for j in
                                                                       prometheus["scrape_configs"]}


# -- compose: ports, secrets, and the contract with the staging stack ------------------------------------


def monitoring_compose() -> dict:
    return load_yaml(MONITORING / "docker-compose.monitoring.yml")


def test_only_grafana_loki_and_dozzle_are_published_and_only_on_loopback():
    services = monitoring_compose()["services"]
    published = {name: service.get("ports", []) for name, service in services.items()}
    assert published == {"prometheus": [], "loki": ["127.0.0.1:3100:3100"], "promtail": [],
                         "grafana": ["127.0.0.1:3003:3000"], "dozzle": ["127.0.0.1:8888:8080"]}
    assert all(service["container_name"] == f"kloyst-monitoring-{name}" for name, service in services.items())


def test_grafanas_admin_password_comes_from_an_uncommitted_env_file():
    grafana = monitoring_compose()["services"]["grafana"]
    assert grafana["env_file"] == ["monitoring.env"]
    assert not any("PASSWORD" in key for key in grafana.get("environment", {}))
    assert "monitoring.env" in (MONITORING / ".gitignore").read_text().split()
    assert "GF_SECURITY_ADMIN_PASSWORD=" in (MONITORING / "monitoring.env.example").read_text()


def scrape_hosts() -> set[str]:
    hosts = set()
    for job in load_yaml(MONITORING / "prometheus" / "prometheus.yml")["scrape_configs"]:
        for static in job.get("static_configs", []):
            hosts |= {target.rsplit(":", 1)[0] for target in static["targets"]}
        for dns in job.get("dns_sd_configs", []):
            assert dns["type"] == "A" and dns["port"] == 9464
            hosts |= set(dns["names"])
    return hosts - {"127.0.0.1", "localhost"}


def test_prometheus_scrapes_each_kloyst_service_on_the_metrics_port_and_every_replica_of_the_scalable_ones():
    prometheus = load_yaml(MONITORING / "prometheus" / "prometheus.yml")
    targets = [t for job in prometheus["scrape_configs"] for s in job.get("static_configs", []) for t in s["targets"]]
    assert {t for t in targets if not t.startswith("127.0.0.1")} == {"api-gateway:9464", "webhook:9464"}
    # Scaled with --scale: one DNS name answers every replica, so each one is scraped.
    discovered = {name for job in prometheus["scrape_configs"] for d in job.get("dns_sd_configs", [])
                  for name in d["names"]}
    assert discovered == {"worker-pool", "outbox-relay"}
    assert scrape_hosts() == {"api-gateway", "webhook", "worker-pool", "outbox-relay"}


def test_prometheus_joins_the_staging_network_and_promtail_reads_the_staging_log_volume_by_their_real_names():
    compose = monitoring_compose()
    staging_net = compose["networks"]["staging"]
    assert staging_net == {"name": "kloyst-staging-net", "external": True}
    assert "staging" in compose["services"]["prometheus"]["networks"]
    assert compose["networks"]["monitoring"]["name"] == "kloyst-monitoring-net"
    assert compose["volumes"]["kloyst-logs"]["external"] is True


@pytest.fixture
def staging_compose() -> dict:
    if not STAGING_COMPOSE.exists():
        pytest.skip(f"{STAGING_COMPOSE.relative_to(ROOT)} does not exist yet")
    return load_yaml(STAGING_COMPOSE)


def test_scrape_targets_are_services_of_the_staging_compose_file_with_their_metrics_listener(staging_compose):
    services = staging_compose["services"]
    assert scrape_hosts() <= set(services), scrape_hosts() - set(services)
    for name in scrape_hosts():
        environment = services[name].get("environment") or {}
        if isinstance(environment, list):
            environment = dict(item.split("=", 1) for item in environment if "=" in item)
        if "METRICS_PORT" in environment:  # else it comes from an env file: not checkable here
            assert str(environment["METRICS_PORT"]) == "9464"
        ports = [str(port) for port in services[name].get("ports", [])]
        assert not any(port == "9464" or port.endswith(":9464") for port in ports), f"{name} publishes port 9464"


def staging_project() -> str:
    """The staging compose project's name: COMPOSE_PROJECT_NAME in docker/.env (beside the compose file)."""
    lines = (ROOT / "docker" / ".env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if line and not line.startswith("#"))["COMPOSE_PROJECT_NAME"]


def _docker_names(compose: dict, section: str) -> dict[str, str]:
    """``{key: the name Docker gives it}``: its ``name:``, else ``<project>_<key>`` as compose names it."""
    project = staging_project()
    return {key: (spec or {}).get("name", f"{project}_{key}") for key, spec in (compose.get(section) or {}).items()}


def test_the_external_network_and_log_volume_are_the_staging_compose_files(staging_compose):
    monitoring = monitoring_compose()
    assert staging_project() == "kloyst-staging"
    assert monitoring["networks"]["staging"]["name"] in _docker_names(staging_compose, "networks").values()
    # The volume every Kloyst service writes its log files to, under the name Docker really gives it.
    staging_volumes = _docker_names(staging_compose, "volumes")
    writers = {mount.split(":")[0] for name in scrape_hosts()
               for mount in staging_compose["services"][name].get("volumes", [])
               if isinstance(mount, str) and mount.split(":")[1:2] == ["/var/log/kloyst"]}
    assert writers == {"kloyst-logs"}
    assert monitoring["volumes"]["kloyst-logs"]["name"] == staging_volumes["kloyst-logs"]


# -- the operators' guide ----------------------------------------------------------------------------------


def test_docs_dashboards_lists_every_metric_and_every_dashboard(registry):
    text = DOCS.read_text()
    missing = [info.name for info in kmetrics.of(registry).catalogue() if f"`{info.name}" not in text]
    assert missing == [], f"document these metrics in docs/dashboards.md's reference table: {missing}"
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["title"] in text and dashboard["uid"] in text, dashboard["uid"]
