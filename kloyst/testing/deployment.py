"""A Kloyst deployment made of real processes on this machine, for tests and benchmarks that kill them.

Each service mode runs as its own ``kloyst run <ini>`` process with ``SERVICE_TYPE`` in its
environment, exactly as the staging compose runs its containers, and ``kloyst sandbox`` stands
in for Meta in a process of its own (Meta is remote: it outlives every Kloyst process and keeps
retrying webhooks while Kloyst's are down). Every process opens its metrics listener on a port
of its own, and its ``/healthz`` (200 once every loop of the process runs) is what "ready"
means here. Processes are started, SIGKILLed and restarted by name; their output goes to one
log file each under the deployment's directory, appended across restarts.

Nothing here knows a plugin: seeding vendors and launching campaigns is the caller's business
(through the API, or through the database as an import would).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from kloyst import testing
from kloyst.cli.bootstrap import load
from kloyst.testing.processes import free_port

KLOYST = str(Path(sys.executable).with_name("kloyst"))


def process_env(**variables: str) -> dict[str, str]:
    """A minimal environment: no Kloyst setting leaks in from the caller's shell."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "HOME": os.environ.get("HOME", "/")}
    if "PYTHONPATH" in os.environ:  # a checkout that is not the installed one keeps working
        env["PYTHONPATH"] = os.environ["PYTHONPATH"]
    env.update(variables)
    return env


def write_ini(path: Path, settings: dict[str, str]) -> Path:
    """``[app:main]`` of a Kloyst ini file with these settings (``%`` escaped for the ini parser)."""
    lines = ["[app:main]", "use = egg:kloyst"]
    lines += [f"{key} = {str(value).replace('%', '%%')}" for key, value in settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def http_json(url: str, body: dict | None = None, *, method: str | None = None, headers: dict | None = None,
              timeout: float = 10) -> tuple[int, dict]:
    """One JSON request; ``(status, parsed body)`` whatever the status."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method, headers={
        **({"Content-Type": "application/json"} if data is not None else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            return error.code, json.loads(raw) if raw else {}
        except ValueError:
            return error.code, {"raw": raw.decode(errors="replace")}


@dataclass
class Service:
    """One ``kloyst run`` process of the deployment, by name (``worker-1``), restartable."""

    name: str
    mode: str
    ini: Path
    log: Path
    env: dict[str, str]
    metrics_port: int
    process: subprocess.Popen | None = None
    starts: int = 0
    kills: list[float] = field(default_factory=list)  # time.time() of each SIGKILL

    def start(self) -> Service:
        if self.alive:
            raise RuntimeError(f"{self.name} is already running")
        with self.log.open("a") as output:
            output.write(f"\n==== start {self.starts + 1} of {self.name} ({self.mode}) at {time.time():.3f}\n")
            output.flush()
            self.process = subprocess.Popen([KLOYST, "run", str(self.ini)], env=self.env, stdout=output,
                                            stderr=subprocess.STDOUT, cwd=self.ini.parent)
        self.starts += 1
        return self

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        """Every loop of the process runs (its metrics listener's ``/healthz`` answers 200)."""
        if not self.alive:
            return False
        try:
            return http_json(f"http://127.0.0.1:{self.metrics_port}/healthz", timeout=1)[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ready():
                return
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode} while starting:\n"
                                   f"{self.tail()}")
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} was not ready within {timeout:.0f} s:\n{self.tail()}")

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, as an OOM kill or a lost host."""
        process = self.process
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            self.kills.append(time.time())
            process.wait(timeout=10)

    def terminate(self, timeout: float = 60) -> int | None:
        """SIGTERM and the exit status (None if it had already exited); SIGKILL after ``timeout``."""
        process = self.process
        if process is None or process.poll() is not None:
            return None
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise RuntimeError(f"{self.name} did not stop within {timeout:.0f} s of SIGTERM:\n{self.tail()}") from None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:]) if self.log.exists() else ""


class Deployment:
    """``kloyst run`` processes sharing one ini file (one database, one Redis, one queue), run in its directory."""

    def __init__(self, ini: Path) -> None:
        self.ini = ini
        self.directory = ini.parent
        self.api_port, self.webhook_port = free_port(), free_port()
        self.services: dict[str, Service] = {}

    @classmethod
    def from_settings(cls, directory: Path, settings: dict[str, str]) -> Deployment:
        """A deployment whose ini file says ``settings`` (logs and mail under ``directory``)."""
        directory.mkdir(parents=True, exist_ok=True)
        return cls(write_ini(directory / "kloyst.ini", {
            "kloyst.http.host": "127.0.0.1", "kloyst.log.dir": str(directory / "log"), "kloyst.log.console": "false",
            "kloyst.mail.file_dir": str(directory / "mail"), **settings}))

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def webhook_url(self) -> str:
        """Where Meta posts webhooks: the WEBHOOK process, or the ALL process's one port."""
        port = self.webhook_port if any(s.mode == "WEBHOOK" for s in self.services.values()) else self.api_port
        return f"http://127.0.0.1:{port}/webhook/whatsapp"

    def add(self, name: str, mode: str, **env: str) -> Service:
        metrics_port = free_port()
        service = Service(name, mode, self.ini, self.directory / f"{name}.log", process_env(
            SERVICE_TYPE=mode, PORT=str(self.api_port), WEBHOOK_PORT=str(self.webhook_port),
            METRICS_PORT=str(metrics_port), **env), metrics_port)
        self.services[name] = service
        return service

    def __getitem__(self, name: str) -> Service:
        return self.services[name]

    def start(self, *names: str, timeout: float = 90) -> None:
        """Start these services (all when none is named) and wait until each is ready."""
        chosen = [self.services[n] for n in names] if names else list(self.services.values())
        for service in chosen:
            service.start()
        for service in chosen:
            service.wait_ready(timeout)

    def stop(self, timeout: float = 60) -> dict[str, int | None]:
        """SIGTERM every running service (workers last: they finish what they hold); their exit statuses."""
        order = sorted(self.services.values(), key=lambda s: s.mode == "WORKER")
        return {service.name: service.terminate(timeout) for service in order}

    def kill_all(self) -> None:
        for service in self.services.values():
            service.kill()

    def cli(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        """``kloyst <args…> <this deployment's ini>``, as an operator runs it."""
        return subprocess.run([KLOYST, *args, str(self.ini)], env=process_env(), capture_output=True, text=True,
                              timeout=timeout, cwd=self.directory)


class Sandbox:
    """``kloyst sandbox`` in its own process: Meta, as far as the deployment can tell."""

    def __init__(self, ini: Path, log: Path, *, numbers: dict[str, int], waba: str, port: int = 0,
                 latency_ms: float = 100, webhook_url: str | None = None, retry_seconds: float = 3600,
                 retry_max_interval: float = 2.0) -> None:
        self.log = log
        self.args = [KLOYST, "sandbox", str(ini), "--port", str(port), "--latency-ms", str(latency_ms), "--waba", waba,
                     "--webhook-retry-seconds", str(retry_seconds), "--webhook-retry-max-interval",
                     str(retry_max_interval)]
        for number, mps in numbers.items():
            self.args += ["--number", f"{number}:{mps}"]
        if webhook_url:
            self.args += ["--webhook-url", webhook_url]
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> Sandbox:
        output = self.log.open("a")
        self.process = process = subprocess.Popen(self.args, env=process_env(), stdout=subprocess.PIPE,
                                                  stderr=output, text=True)
        assert process.stdout is not None  # stdout=PIPE
        self.url = json.loads(process.stdout.readline())["url"]
        return self

    def api(self, action: str, body: dict | None = None, *, query: str = "") -> dict:
        """The sandbox's ``/_sandbox/`` control and record API."""
        status, answer = http_json(f"{self.url}/_sandbox/{action}{'?' + query if query else ''}", body, timeout=60)
        if status != 200:
            raise RuntimeError(f"sandbox {action}: {status} {answer}")
        return answer

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# The deployment people run: each SERVICE_TYPE in a process of its own.
SERVICE_MODES = (("api", "API_GATEWAY"), ("webhook", "WEBHOOK"), ("worker", "WORKER"), ("outbox", "OUTBOX"))
SETUP_COMMANDS = (("db", "upgrade"), ("pricing", "load-card", "--development"))


def staging_settings(database_url: str, redis_url: str, *, queue: str, **extra: str) -> dict[str, str]:
    """What a multi-process deployment's ini says: staging's shape (PostgreSQL, Redis, a real queue of its own,
    named after ``queue``) with the test keys, and ``extra`` on top."""
    keys = {k: v for k, v in testing.TEST_SETTINGS.items() if not k.startswith("kloyst.queue.")}
    return {**keys, "kloyst.database.url": database_url, "kloyst.redis.url": redis_url,
            "kloyst.queue.backend": "redis", "kloyst.queue.name": f"{queue}-{uuid.uuid4().hex[:8]}", **extra}


@dataclass
class Running:
    """A started deployment, the sandbox it talks to, and the test's own application over the same ini."""

    deployment: Deployment
    sandbox: Sandbox
    registry: object


@contextlib.contextmanager
def running(directory: Path, settings: dict[str, str], *, numbers: dict[str, int], waba: str,
            services=SERVICE_MODES, commands=SETUP_COMMANDS, **sandbox: float) -> Iterator[Running]:
    """The deployment of ``settings`` with the sandbox as its Meta, set up by ``commands`` (as an operator runs
    them) and started; every process is killed and the registry's engine disposed on the way out.

    ``numbers`` and ``waba`` are the sandbox's; ``sandbox`` passes the rest of :class:`Sandbox`'s options
    (``latency_ms``, ``retry_max_interval``…). The Graph URL of ``settings`` is set to the sandbox's port.
    """
    port = free_port()
    deployment = Deployment.from_settings(directory, {**settings, "kloyst.meta.graph_url": f"http://127.0.0.1:{port}"})
    for name, mode in services:
        deployment.add(name, mode)
    meta = Sandbox(deployment.ini, directory / "sandbox.log", numbers=numbers, waba=waba, port=port,
                   webhook_url=deployment.webhook_url, **sandbox)
    registry = None
    try:
        for command in commands:
            done = deployment.cli(*command)
            assert done.returncode == 0, done.stdout + done.stderr
        meta.start()
        deployment.start()
        registry = load(str(deployment.ini))[1]
        yield Running(deployment, meta, registry)
    finally:
        deployment.kill_all()
        meta.stop()
        if registry is not None:
            registry["kloyst.engine"].dispose()

