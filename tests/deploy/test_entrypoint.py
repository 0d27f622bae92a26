"""docker/entrypoint.sh and docker/healthcheck.py, run on this machine the way the image runs them.

In the image, PATH starts with Kloyst's virtualenv and KLOYST_INI names /app/staging.ini. Here
the same two scripts run with this virtualenv first on PATH, a copy of staging.ini, a fresh
PostgreSQL database, this test worker's Redis database, and each service's environment taken
from docker-compose.staging.yml (only ports, and paths that exist only in the container, are
moved). Secrets are the test suite's development-only keys.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from deploy_support import DOCKER, STAGING_INI, app_services, compose, environment, migrate_service_name
from kloyst.testing.processes import free_port

from kloyst import testing

pytestmark = pytest.mark.slow

ENTRYPOINT = str(DOCKER / "entrypoint.sh")
HEALTHCHECK = str(DOCKER / "healthcheck.py")
MODES = {environment(service)["SERVICE_TYPE"]: name for name, service in app_services().items()}


@dataclass
class Staging:
    root: Path
    database_url: str
    base_env: dict[str, str]

    def env_of(self, service: str) -> dict[str, str]:
        """The environment compose gives ``service``, with host ports and container paths moved here."""
        env = {**self.base_env, **environment(compose()["services"][service])}
        env.update(PORT=str(free_port()), WEBHOOK_PORT=str(free_port()))
        if "METRICS_PORT" in env:
            env["METRICS_PORT"] = str(free_port())
        if "IMPORTS_STORAGE_DIR" in env:
            env["IMPORTS_STORAGE_DIR"] = str(self.root / "imports")
        return env


def make_staging(root: Path, redis_url: str, database_url: str) -> Staging:
    ini = root / "staging.ini"
    shutil.copy(STAGING_INI, ini)
    settings = testing.TEST_SETTINGS
    base = {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "LANG": "C.UTF-8", "HOME": str(root), "KLOYST_INI": str(ini),
        "DATABASE_URL": database_url, "REDIS_URL": redis_url,
        "JWT_SIGNING_KEYS": settings["kloyst.jwt.signing_keys"],
        "DATA_ENCRYPTION_KEYS": settings["kloyst.crypto.data_keys"],
        "DATA_HASH_KEY": settings["kloyst.crypto.hash_key"],
        "META_APP_SECRET": settings["kloyst.meta.app_secret"],
        "META_VERIFY_TOKEN": settings["kloyst.meta.verify_token"],
        "SMTP_URL": "smtp://user:password@127.0.0.1:2525",
        "LOG_DIR": str(root / "log"),
    }
    return Staging(root, database_url, base)


@pytest.fixture
def fresh_staging(tmp_path, kloyst_redis_url):
    """Staging against an empty database of its own."""
    name = f"kloyst_deploy_{uuid.uuid4().hex[:10]}"
    url = testing.create_database(name)
    yield make_staging(tmp_path, kloyst_redis_url, url)
    testing.drop_database(name)


@pytest.fixture(scope="module")
def migrated_staging(tmp_path_factory, kloyst_redis_url):
    """Staging against a database the entrypoint's ``migrate`` brought to every head."""
    name = f"kloyst_deploy_{uuid.uuid4().hex[:10]}"
    url = testing.create_database(name)
    staging = make_staging(tmp_path_factory.mktemp("staging"), kloyst_redis_url, url)
    migrated = entrypoint(["migrate"], staging.env_of(migrate_service_name()))
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    yield staging
    testing.drop_database(name)


def entrypoint(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([ENTRYPOINT, *args], env=env, capture_output=True, text=True, timeout=timeout)


def healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, HEALTHCHECK], env=env, capture_output=True, text=True, timeout=30)


def wait_healthy(process: subprocess.Popen, env: dict[str, str], output: Path, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the service exited with {process.returncode}:\n{output.read_text()}")
        last = healthcheck(env)
        if last.returncode == 0:
            return last.stdout
        time.sleep(0.3)
    pytest.fail(f"never healthy; last check: {last.stdout if last else ''}\n{output.read_text()}")


def test_the_services_refuse_a_database_the_migration_has_not_upgraded(fresh_staging):
    result = entrypoint([], fresh_staging.env_of("api-gateway"))
    assert result.returncode == 2
    assert "kloyst db upgrade" in result.stderr  # which is why every service waits for the migrate service


def test_migrate_brings_the_database_to_every_head_and_a_second_run_changes_nothing(migrated_staging):
    env = migrated_staging.env_of(migrate_service_name())
    again = entrypoint(["migrate"], env)
    assert again.returncode == 0, again.stderr
    assert again.stdout.startswith("database at ")
    current = entrypoint(["kloyst", "db", "current", env["KLOYST_INI"]], env)  # other commands pass through
    current_line, heads_line = current.stdout.splitlines()[:2]
    assert current_line.removeprefix("current:").strip() == heads_line.removeprefix("heads:").strip() != ""


@pytest.mark.parametrize("mode", ["API_GATEWAY", "WEBHOOK", "WORKER", "OUTBOX"])
def test_the_health_check_fails_until_the_mode_is_up_passes_while_it_runs_and_fails_after_sigterm(
        migrated_staging, tmp_path, mode):
    env = migrated_staging.env_of(MODES[mode])
    before = healthcheck(env)
    assert before.returncode == 1 and before.stdout.startswith("unhealthy:"), before.stdout

    output = tmp_path / "service.out"
    with output.open("w") as sink:
        process = subprocess.Popen([ENTRYPOINT], env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:
        healthy = wait_healthy(process, env, output)
        assert healthy.startswith(f"healthy ({mode})")
        assert f":{env['METRICS_PORT']}/healthz 200" in healthy  # every mode's loops, on the metrics listener
        # The entrypoint exec'd: the process Docker signals is kloyst itself, not a shell in front of it.
        command_line = Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0")
        assert Path(command_line[1].decode()).name == "kloyst" and command_line[2] == b"run", command_line

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, output.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
    assert f"{mode} stopped" in output.read_text()
    assert healthcheck(env).returncode == 1
