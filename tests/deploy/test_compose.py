"""docker/docker-compose.staging.yml: one image, migrations before services, health, restarts, volumes, ports.

The compose file's third-party images (PostgreSQL, Redis, clamd…) cannot be pulled here, so it is
never brought up whole: these tests hold it to what the deployment promises (issue 7, the seeds'
staging layout) and to the rest of the repository: the Dockerfile's targets, staging.ini's ports
and log directory, the imports storage setting. Kloyst's own image is built and run for real in
test_docker_image.py, with each container's environment taken from this file; Debian's
docker-compose checks the file itself (test_compose_config.py).
"""

from __future__ import annotations

import pytest
from deploy_support import (COMPOSE_FILE, DOCKERFILE, app_services, builds_kloyst, compose, dockerfile_stages,
                            environment, kloyst_services, migrate_service_name, staging_ini)

LONG_RUNNING_RESTARTS = {"always", "unless-stopped", "on-failure"}
PUBLISHED = {"api-gateway": "kloyst.http.port", "webhook": "kloyst.http.webhook_port"}


def staging_setting(key: str) -> str:
    return staging_ini()["app:main"][key]


def volume_mounts(service: dict) -> list[tuple[str, str]]:
    """``(source, target)`` of every volume entry, short or long syntax."""
    mounts = []
    for entry in service.get("volumes") or []:
        if isinstance(entry, dict):
            mounts.append((entry.get("source", ""), entry["target"]))
        else:
            source, _, rest = entry.partition(":")
            mounts.append((source, rest.split(":")[0]))
    return mounts


def test_every_service_that_builds_uses_the_dockerfile_and_one_of_its_stages():
    targets = {stage.name for stage in dockerfile_stages() if stage.name}
    builders = {name: service["build"] for name, service in compose()["services"].items() if "build" in service}
    assert builders, "no service builds the Kloyst image"
    for name, build in builders.items():
        assert builds_kloyst(compose()["services"][name]), f"{name} builds from something else than {DOCKERFILE}"
        assert build.get("target") in targets, f"{name} builds {build.get('target')!r}; the Dockerfile has {targets}"


def test_every_kloyst_service_runs_the_same_image():
    images = {name: service.get("image") for name, service in kloyst_services().items()}
    assert len(set(images.values())) == 1 and None not in images.values(), images


def test_the_app_services_are_the_four_modes_each_with_its_service_type():
    modes = {name: environment(service).get("SERVICE_TYPE") for name, service in app_services().items()}
    assert modes == {"api-gateway": "API_GATEWAY", "webhook": "WEBHOOK", "worker-pool": "WORKER",
                     "outbox-relay": "OUTBOX"}


def test_the_migration_runs_once_and_every_app_service_waits_for_it_to_succeed():
    migrate = migrate_service_name()
    assert compose()["services"][migrate].get("restart") == "no"  # a failed migration stops the deploy, no loop
    for name, service in app_services().items():
        depends = service.get("depends_on") or {}
        assert depends.get(migrate, {}).get("condition") == "service_completed_successfully", name
        for store in ("postgres", "redis"):
            assert depends.get(store, {}).get("condition") == "service_healthy", f"{name} must wait for {store}"


def test_every_long_running_service_has_a_health_check_and_a_restart_policy():
    migrate = migrate_service_name()
    for name, service in compose()["services"].items():
        if name == migrate:
            continue
        check = service.get("healthcheck") or {}
        assert check.get("test") and not check.get("disable"), f"{name} has no health check"
        assert service.get("restart") in LONG_RUNNING_RESTARTS, f"{name} restarts {service.get('restart')!r}"


def test_every_volume_is_a_declared_named_volume_and_every_declared_one_is_used():
    declared = compose().get("volumes") or {}
    used = set()
    for name, service in compose()["services"].items():
        for source, target in volume_mounts(service):
            assert source in declared, f"{name} mounts {source!r} at {target}: use a named volume declared below"
            used.add(source)
    assert used == set(declared), f"declared but unused: {set(declared) - used}"


def test_only_the_api_and_the_webhook_publish_ports_and_only_on_loopback():
    published = {name: service["ports"] for name, service in compose()["services"].items() if service.get("ports")}
    assert set(published) == set(PUBLISHED)
    for name, ports in published.items():
        port = staging_setting(PUBLISHED[name])
        assert ports == [f"127.0.0.1:{port}:{port}"], f"{name} must publish its staging.ini port on 127.0.0.1 only"


@pytest.mark.parametrize("name", ["worker-pool", "outbox-relay"])
def test_workers_and_relays_can_be_scaled(name):
    service = compose()["services"][name]
    assert "container_name" not in service  # a fixed name allows one container
    assert not service.get("ports")  # so does a host port


def test_singletons_keep_the_container_names_of_the_staging_layout():
    names = {name: service.get("container_name") for name, service in compose()["services"].items()}
    assert names["api-gateway"] == "kloyst-staging-api-gateway"
    assert names["webhook"] == "kloyst-staging-webhook-worker"
    assert names["postgres"] == "kloyst-staging-postgres"
    assert names["redis"] == "kloyst-staging-redis"


def test_every_service_is_on_the_staging_network_under_its_fixed_name():
    assert compose()["networks"]["kloyst-staging-net"]["name"] == "kloyst-staging-net"  # monitoring joins it by name
    for name, service in compose()["services"].items():
        assert service.get("networks") == ["kloyst-staging-net"], name


def test_every_kloyst_service_writes_its_log_files_to_the_shared_logs_volume():
    assert compose()["volumes"]["kloyst-logs"]["name"] == "kloyst-logs"  # promtail mounts it by this name
    log_dir = staging_setting("kloyst.log.dir")
    for name, service in kloyst_services().items():
        assert ("kloyst-logs", log_dir) in volume_mounts(service), f"{name} must mount kloyst-logs at {log_dir}"


def test_every_app_service_opens_the_metrics_listener_inside_the_network_only():
    for name, service in app_services().items():
        env = environment(service)
        assert (env.get("METRICS_PORT"), env.get("METRICS_HOST")) == ("9464", "0.0.0.0"), name
        assert all("9464" not in str(port) for port in service.get("ports") or []), f"{name} publishes metrics"


def test_uploads_are_kept_on_one_volume_shared_by_the_api_and_the_workers():
    volumes = set()
    for name in ("api-gateway", "worker-pool"):
        service = compose()["services"][name]
        storage = environment(service).get("IMPORTS_STORAGE_DIR")
        assert storage, f"{name} must set IMPORTS_STORAGE_DIR (the default is a relative path inside the image)"
        sources = [source for source, target in volume_mounts(service) if target == storage]
        assert sources, f"{name} keeps uploads in {storage}, which is no volume"
        volumes.update(sources)
    assert len(volumes) == 1, f"the API stores uploads and the workers read them: one volume, not {volumes}"


def test_the_scanner_address_names_the_clamd_service():
    for name, service in app_services().items():
        address = environment(service)["CLAMD_ADDRESS"]
        host = address.removeprefix("tcp://").split(":")[0]
        assert host in compose()["services"], f"{name}: CLAMD_ADDRESS {address} names no service of {COMPOSE_FILE.name}"


def test_every_service_bounds_its_docker_log():
    for name, service in compose()["services"].items():
        logging = service.get("logging") or {}
        assert logging.get("driver") == "json-file" and logging.get("options", {}).get("max-size"), name
