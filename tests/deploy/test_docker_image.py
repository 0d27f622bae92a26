"""docker/Dockerfile built and run by a real Docker engine: the image staging deploys, doing its job.

The image is built from the repository's Dockerfile, unchanged, on a Python base made of Debian's
packages (no registry is reachable here: see :mod:`kloyst.testing.docker`). Then, as on staging,
``migrate`` runs once and the four modes run as containers of their own, each with its environment
in an env file, the way compose's ``env_file`` gives it: PostgreSQL (a database of this module's),
this test worker's Redis database, secrets made for this run, and Meta played by the sandbox in a
process on this machine. Every container shares the host's network and listens on 127.0.0.1 only,
on ports of its own; nothing is ever sent to a container's bridge address.

A campaign goes from the API container through the WORKER and OUTBOX containers to the sandbox, and
the sandbox's statuses come back through the WEBHOOK container, until every recipient's message is
read, every hold is settled and Kloyst's own checks pass. The image is also checked for what staging
relies on: it runs as a user other than root, carries no secret, env file or private key, and
``docker stop`` ends each mode cleanly within compose's grace period.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import sys
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from deploy_support import ENV_EXAMPLE, ROOT, app_services, compose, environment, migrate_service_name

from kloyst import testing
from kloyst.testing import docker
from kloyst.testing.clamd import ClamdServer
from kloyst.testing.deployment import Deployment, Sandbox
from kloyst.testing.processes import eventually, free_port

sys.path.insert(0, str(ROOT / "tests" / "chaos"))

from chaos_support import (  # noqa: E402
    CALM_NUMBER,
    CHAOS_NUMBER,
    WABA,
    arrange_vendor,
    campaign_stats,
    deployment_settings,
    launch_campaign,
    registry_for,
    verdict,
    wait_until_quiet,
)

UNAVAILABLE = docker.unavailable()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(UNAVAILABLE is not None, reason=UNAVAILABLE or "")]

IMAGE_TAG = "kloyst-test/kloyst-core:test"
MODES = {environment(service)["SERVICE_TYPE"]: name for name, service in app_services().items()}
RECIPIENTS = 40
# The image's own check, probed every 2 s instead of staging's 15 s, so that the test waits less.
HEALTH_INTERVAL = "2s"
# The variables docker/staging.env.example lists: none may be baked into the image.
ENV_VARIABLES = re.findall(r"^([A-Z][A-Z0-9_]*)=", ENV_EXAMPLE.read_text(), flags=re.MULTILINE)
# A PEM private key: the armour line, then its base64 body or an encrypted key's headers. Code that only names the
# armour (cryptography's ssh.py) is not a key, nor are the self-test vectors compiled into a library (Debian's
# GnuTLS, which apt needs, carries some; so does every bookworm image): binaries are not searched for keys.
PRIVATE_KEY = re.compile(rb"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----\r?\n(?:[A-Za-z0-9+/]{40}|Proc-Type:)")
ELF = b"\x7fELF"
# The host's ini (the sandbox's, the test's own registry's, `kloyst … check`'s) holds the same secrets.
INI_KEYS = {"JWT_SIGNING_KEYS": "kloyst.jwt.signing_keys", "DATA_ENCRYPTION_KEYS": "kloyst.crypto.data_keys",
            "DATA_HASH_KEY": "kloyst.crypto.hash_key", "META_APP_SECRET": "kloyst.meta.app_secret",
            "META_VERIFY_TOKEN": "kloyst.meta.verify_token"}


def fresh_secrets() -> dict[str, str]:
    """The secrets of docker/staging.env.example, made for this run the way the example says to make them."""
    def key(kid: str) -> str:
        return f"{kid}:{base64.urlsafe_b64encode(os.urandom(32)).decode()}"

    return {"JWT_SIGNING_KEYS": key("jwt-image-test"), "DATA_ENCRYPTION_KEYS": key("data-image-test"),
            "DATA_HASH_KEY": secrets.token_urlsafe(32), "META_APP_SECRET": secrets.token_urlsafe(32),
            "META_VERIFY_TOKEN": secrets.token_urlsafe(24),
            "SMTP_URL": f"smtp://kloyst:{secrets.token_urlsafe(16)}@127.0.0.1:{free_port()}"}


def secret_values(env: dict[str, str]) -> list[str]:
    """What of the secrets must never be found in the image: each key without its id, the SMTP password."""
    values = [env[name].split(":", 1)[1] for name in ("JWT_SIGNING_KEYS", "DATA_ENCRYPTION_KEYS")]
    values += [env["DATA_HASH_KEY"], env["META_APP_SECRET"], env["META_VERIFY_TOKEN"],
               env["SMTP_URL"].split(":")[2].split("@")[0]]
    return values


def grace_seconds(service: dict) -> int:
    """Compose's ``stop_grace_period`` of ``service`` (``45s``, ``1m``) in seconds; Docker's 10 s when unset."""
    value = str(service.get("stop_grace_period", "10s"))
    return sum(int(amount) * {"h": 3600, "m": 60, "s": 1}[unit] for amount, unit in re.findall(r"(\d+)([hms])", value))


@dataclass
class Stack:
    image: str
    directory: Path
    deployment: Deployment  # the host's side: the API's and the webhook's ports, the ini, `kloyst … check`
    sandbox: Sandbox
    secrets: dict[str, str]
    migrate: subprocess.CompletedProcess
    registry: object
    containers: dict[str, str] = field(default_factory=dict)  # SERVICE_TYPE → container name
    env_files: dict[str, Path] = field(default_factory=dict)  # compose service → its env file


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    """The runtime target of docker/Dockerfile built from this checkout: its image id."""
    docker.engine_version()
    work = tmp_path_factory.mktemp("docker")
    started = time.monotonic()
    base = docker.base_image(work)
    built = time.monotonic()
    image_id = docker.build_image(ROOT, base, IMAGE_TAG, work / "image-build.log")
    print(f"\ntest base {base}: {built - started:.1f} s; Kloyst image {image_id[:19]}: "
          f"{time.monotonic() - built:.1f} s")
    return image_id


def write_env_file(path: Path, env: dict[str, str]) -> Path:
    """An env file as compose's ``env_file`` and ``docker run --env-file`` read it (no quoting: values as they are)."""
    path.write_text("".join(f"{name}={value}\n" for name, value in env.items()))
    path.chmod(0o600)
    return path


def run(image: str, env_file: Path, *command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """A one-off container of the image on the host's network, removed when it exits."""
    return docker.cli("run", "--rm", "--network", "host", "--env-file", str(env_file), image, *command,
                         timeout=timeout, check=False)


@pytest.fixture(scope="module")
def stack(image, request, tmp_path_factory, kloyst_redis_url):
    """migrate, then API_GATEWAY, WEBHOOK, WORKER and OUTBOX as containers, every one healthy; the sandbox and a
    clamd on the host."""
    worker = getattr(request.config, "workerinput", {}).get("workerid", "main")
    database = f"kloyst_image_{worker}"
    database_url = testing.create_database(database)
    directory = tmp_path_factory.mktemp("image")
    made = fresh_secrets()
    queue = f"image-{uuid.uuid4().hex[:8]}"
    graph_port = free_port()
    deployment = Deployment.from_settings(directory, deployment_settings(
        database_url, kloyst_redis_url, f"http://127.0.0.1:{graph_port}", **{"kloyst.queue.name": queue},
        **{INI_KEYS[name]: value for name, value in made.items() if name in INI_KEYS}))
    sandbox = Sandbox(deployment.ini, directory / "sandbox.log", numbers={CALM_NUMBER: 1000, CHAOS_NUMBER: 80},
                      waba=WABA, port=graph_port, latency_ms=20,
                      webhook_url=f"http://127.0.0.1:{deployment.webhook_port}/webhook/whatsapp")
    clamd = ClamdServer(directory / "clamd")
    # What every container shares, on top of what compose gives its service: this run's secrets, database,
    # Redis and queue, Meta's address, and every listener on 127.0.0.1 (the host's network is theirs).
    common = {**made, "DATABASE_URL": database_url, "REDIS_URL": kloyst_redis_url, "QUEUE_NAME": queue,
              "HOST": "127.0.0.1", "PORT": str(deployment.api_port), "WEBHOOK_PORT": str(deployment.webhook_port),
              "META_GRAPH_URL": f"http://127.0.0.1:{graph_port}", "META_TIMEOUT_SECONDS": "5",
              "PRICING_ISSUER_NAME": "Kloyst Image Test Ltd",
              "PRICING_ISSUER_ADDRESS": "1 Test Street; Testville 01234"}
    stack = None
    try:
        clamd.start()
        sandbox.start()
        migrate_env = write_env_file(directory / "migrate.env", {
            **environment(compose()["services"][migrate_service_name()]), **common})
        migrated = run(image, migrate_env, "migrate")
        assert migrated.returncode == 0, migrated.stdout + migrated.stderr
        card = run(image, migrate_env, "kloyst", "pricing", "load-card", "--development", "/app/staging.ini")
        assert card.returncode == 0, card.stdout + card.stderr
        stack = Stack(image, directory, deployment, sandbox, made, migrated, registry_for(deployment),
                      env_files={migrate_service_name(): migrate_env})
        for mode, service in MODES.items():
            settings = compose()["services"][service]
            env = {**environment(settings), **common, "CLAMD_ADDRESS": clamd.address}
            if "METRICS_PORT" in env:
                env.update(METRICS_PORT=str(free_port()), METRICS_HOST="127.0.0.1")
            stack.env_files[service] = write_env_file(directory / f"{service}.env", env)
            name = f"kloyst-test-{worker}-{mode.lower().replace('_', '-')}-{uuid.uuid4().hex[:6]}"
            docker.cli("run", "--detach", "--name", name, "--network", "host",
                          *(["--init"] if settings.get("init") else []), "--env-file", str(stack.env_files[service]),
                          "--health-interval", HEALTH_INTERVAL, image)
            stack.containers[mode] = name
        docker.wait_healthy(list(stack.containers.values()), timeout=180)
        yield stack
    finally:
        for mode, name in (stack.containers.items() if stack else ()):
            (directory / f"{mode.lower()}.container.log").write_text(docker.logs(name, tail=100_000))
            docker.cli("rm", "--force", name, check=False)
        sandbox.stop()
        clamd.stop()
        if stack is not None:
            stack.registry["kloyst.engine"].dispose()
        testing.drop_database(database)


def test_migrate_needs_no_service_type_and_brings_the_database_to_every_head(stack):
    env_file = stack.env_files[migrate_service_name()].read_text()
    assert "SERVICE_TYPE=" not in env_file  # as compose runs it: a migration runs no service
    assert stack.migrate.returncode == 0, stack.migrate.stderr
    # Asked of the image's Kloyst: the host's may have more plugins (the example third-party one) than it ships.
    current = run(stack.image, stack.env_files[migrate_service_name()], "kloyst", "db", "current", "/app/staging.ini")
    assert current.returncode == 0, current.stdout + current.stderr
    current_line, heads_line = current.stdout.splitlines()[:2]
    assert current_line.removeprefix("current:").strip() == heads_line.removeprefix("heads:").strip() != ""


def test_every_mode_turns_healthy_by_the_images_own_health_check(stack):
    for mode, name in stack.containers.items():
        inspected = docker.cli("inspect", "--format", "{{json .Config.Healthcheck.Test}}", name).stdout
        assert "/app/docker/healthcheck.py" in inspected, inspected  # the image's check, not one given by the test
        state = docker.container_state(name)
        assert state["Health"]["Status"] == "healthy", state
        assert state["Health"]["Log"][-1]["Output"].startswith(f"healthy ({mode})"), state["Health"]["Log"][-1]


def test_the_image_runs_as_a_user_other_than_root(stack):
    user = docker.cli("image", "inspect", "--format", "{{.Config.User}}", stack.image).stdout.strip()
    assert user and user.split(":")[0] not in ("root", "0"), user
    for name in stack.containers.values():
        uid = docker.cli("exec", name, "id", "-u").stdout.strip()
        assert uid.isdigit() and int(uid) != 0, (name, uid)


def test_the_image_holds_no_secret_no_env_file_and_no_private_key(stack):
    values = secret_values(stack.secrets)
    history = docker.cli("history", "--no-trunc", "--format", "{{.CreatedBy}}", stack.image).stdout
    assert history.strip()
    assert [value for value in values if value in history] == []
    baked = docker.cli("image", "inspect", "--format", "{{range .Config.Env}}{{println .}}{{end}}",
                          stack.image).stdout.splitlines()
    assert [line for line in baked if line.split("=", 1)[0] in ENV_VARIABLES] == []

    container = docker.cli("create", stack.image).stdout.strip()
    found: dict[str, list[str]] = {"env files": [], "secrets": [], "private keys": []}
    seen: set[str] = set()
    try:
        with subprocess.Popen(["docker", "export", container], stdout=subprocess.PIPE) as export, \
                tarfile.open(fileobj=export.stdout, mode="r|") as files:
            for member in files:
                seen.add(member.name)
                if Path(member.name).name.endswith(".env"):  # staging.env, .env, any other
                    found["env files"].append(member.name)
                if not member.isfile():
                    continue
                content = files.extractfile(member).read()  # type: ignore[union-attr]
                if any(value.encode() in content for value in values):
                    found["secrets"].append(member.name)
                if PRIVATE_KEY.search(content) and not content.startswith(ELF):
                    found["private keys"].append(member.name)
        assert export.returncode == 0
    finally:
        docker.cli("rm", container, check=False)
    assert {"app/staging.ini", "opt/kloyst/bin/kloyst"} <= seen  # the whole file system was read
    assert found == {"env files": [], "secrets": [], "private keys": []}


def test_a_campaign_goes_through_the_containers_to_meta_and_every_status_comes_back(stack):
    deployment, sandbox = stack.deployment, stack.sandbox
    engine = stack.registry["kloyst.engine"]
    vendor = arrange_vendor(deployment, stack.registry, RECIPIENTS, name="Image Co")
    campaign_id = launch_campaign(deployment, vendor, CALM_NUMBER, "Through the image")
    eventually(lambda: campaign_stats(deployment, vendor, campaign_id)["status"],
               lambda status: status == "COMPLETED", "the campaign to complete", 180, pause=1.0)
    wait_until_quiet(deployment, sandbox, engine)
    result = verdict(deployment, sandbox, engine, vendor, campaign_id, CALM_NUMBER, RECIPIENTS)
    assert result.problems(allow_unprevented_duplicates=False) == []
    assert (result.sends, result.duplicate_sends) == (RECIPIENTS, 0)
    assert result.counts == {"read": RECIPIENTS}  # sent, delivered and read came back through WEBHOOK


def test_docker_stop_ends_every_mode_cleanly_within_its_grace_period(stack):
    # The HTTP modes first, the workers last, as compose stops a project: workers finish what they hold.
    for mode in sorted(stack.containers, key=lambda mode: mode == "WORKER"):
        name, grace = stack.containers[mode], grace_seconds(compose()["services"][MODES[mode]])
        started = time.monotonic()
        docker.cli("stop", "--time", str(grace), name, timeout=grace + 30)
        took = time.monotonic() - started
        state = docker.container_state(name)
        assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == ("exited", 0, False), (mode, state)
        assert took < grace, f"{mode} took {took:.1f} s of its {grace} s: Docker killed it"
        assert f"{mode} stopped" in docker.logs(name, tail=200), docker.logs(name)
