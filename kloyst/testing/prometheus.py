"""The shipped Prometheus config (``monitoring/prometheus/``), run by Debian's Prometheus against processes here.

A dashboard panel or an alert can only be trusted once a real Prometheus has evaluated it on
what real Kloyst processes export: the label names Prometheus adds (``job``, ``instance``),
staleness, counter resets, ``rate()``'s extrapolation and ``histogram_quantile()`` over real
buckets are Prometheus's, not the test's. So the shipped ``prometheus.yml`` is copied and only
what differs between the staging server and a test machine is changed, all of it in
:func:`render`:

* each scrape job's targets: the staging server finds them by Docker's DNS (``api-gateway:9464``,
  the ``worker-pool`` replicas); here they are the metrics ports of the test's processes on
  127.0.0.1. The job names, which every dashboard and alert select on, stay as shipped;
* the intervals: a 1 s scrape and evaluation interval (and a timeout that fits in it), so that a
  test sees many samples in seconds instead of minutes;
* the rule files: the shipped ones by absolute path, plus any the test adds;
* the self-scrape target, moved to the free port Prometheus listens on.

Every job given a target must exist in the shipped config and every shipped job must get one, so
a job renamed in ``monitoring/`` fails the render instead of silently testing something else.

As with nginx (:mod:`kloyst.testing.nginx`), a missing Prometheus is a failure, never a skip.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from kloyst.testing.processes import free_port, stop_process

MISSING = ("prometheus is not installed: the monitoring tests run the shipped Prometheus config and rules with a "
           "real Prometheus. Install Debian's prometheus (apt-get install prometheus); `make test` "
           "(scripts/run-tests) does.")
SELF_JOB = "prometheus"  # the job that scrapes Prometheus itself


def prometheus_binary() -> str:
    binary = shutil.which("prometheus") or next((p for p in ("/usr/bin/prometheus", "/usr/local/bin/prometheus")
                                                 if Path(p).exists()), None)
    if binary is None:
        raise RuntimeError(MISSING)
    return binary


def render_config(shipped: dict, *, targets: dict[str, list[str]], rule_files: list[Path], port: int,
                  interval: str = "1s") -> dict:
    """The shipped config (parsed ``prometheus.yml``) with ``targets`` (job → ``host:port`` list) in place of its
    service discovery, ``interval`` as scrape and evaluation interval, and ``rule_files`` (absolute paths)."""
    config = copy.deepcopy(shipped)
    config["global"].update(scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval)
    config["rule_files"] = [str(path) for path in rule_files]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    unknown = sorted(set(targets) - set(jobs))
    if unknown:
        raise ValueError(f"jobs {unknown} are not in the shipped prometheus.yml (it has {sorted(jobs)}); the config "
                         "changed, so the test must change with it")
    untargeted = sorted(set(jobs) - set(targets) - {SELF_JOB})
    if untargeted:
        raise ValueError(f"the shipped prometheus.yml scrapes {untargeted}, and the test gave them no target")
    for name, job in jobs.items():
        for key in [key for key in job if key.endswith("_sd_configs") or key == "static_configs"]:
            del job[key]
        job["static_configs"] = [{"targets": [f"127.0.0.1:{port}"] if name == SELF_JOB else list(targets[name])}]
    return config


class PrometheusError(RuntimeError):
    """Prometheus answered an API call with an error (a query that does not parse, a bad range…)."""


@dataclass
class Prometheus:
    """A Prometheus process on 127.0.0.1 with its config and data in ``root``; :meth:`start`, query, :meth:`stop`."""

    root: Path
    binary: str
    port: int
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def conf(self) -> Path:
        return self.root / "prometheus.yml"

    @property
    def log(self) -> Path:
        return self.root / "prometheus.log"

    def start(self, timeout: float = 30.0) -> Prometheus:
        """Run Prometheus (stopped by :meth:`stop`) and wait until ``/-/ready`` answers 200."""
        command = [self.binary, f"--config.file={self.conf}", f"--storage.tsdb.path={self.root / 'data'}",
                   f"--web.listen-address=127.0.0.1:{self.port}", "--log.level=warn"]
        with self.log.open("ab") as output:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                                            cwd=self.root)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode} at startup:\n{self.errors()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"prometheus was not ready on {self.url} within {timeout}s:\n{self.errors()}")

    def stop(self) -> None:
        """SIGTERM (Prometheus shuts down cleanly on it) to the process started here, then wait for it."""
        stop_process(self.process, timeout=30)

    def errors(self) -> str:
        return self.log.read_text(errors="replace")[-5000:] if self.log.exists() else ""

    def api(self, path: str, **params: str | float) -> dict | list:
        """``GET /api/v1/<path>?<params>``: the ``data`` of a success; a :class:`PrometheusError` otherwise."""
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as error:
            answer = json.loads(error.read() or b"{}")
        if answer.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {answer.get('errorType')}: {answer.get('error')}")
        return answer["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict]:
        """An instant query's samples (``[{"metric": {...}, "value": [t, "v"]}]``; a scalar as one sample)."""
        data = self.api("query", query=expr, **({"time": at} if at is not None else {}))
        assert isinstance(data, dict)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> list[dict]:
        """A range query's series (``[{"metric": {...}, "values": [[t, "v"], ...]}]``), as a graph panel asks."""
        data = self.api("query_range", query=expr, start=start, end=end, step=step)
        assert isinstance(data, dict)
        return data["result"]

    def rule_groups(self) -> list[dict]:
        data = self.api("rules")
        assert isinstance(data, dict)
        return data["groups"]

    def targets(self) -> list[dict]:
        data = self.api("targets", state="active")
        assert isinstance(data, dict)
        return data["activeTargets"]


def render(shipped: dict, shipped_dir: Path, root: Path, *, targets: dict[str, list[str]],
           extra_rules: dict[str, dict] | None = None, interval: str = "1s") -> Prometheus:
    """Copy the config ``shipped`` (the repository's ``monitoring/prometheus/prometheus.yml``, parsed; its rule
    files are relative to ``shipped_dir``) into ``root`` with the changes listed in the module docstring.

    ``extra_rules`` are rule files (name → content) written beside it and loaded after the shipped ones.
    Everything is written as JSON, which Prometheus reads as the YAML it is. ``promtool check config`` must
    accept the result.
    """
    binary = prometheus_binary()  # before anything is written: a missing Prometheus says so first
    root.mkdir(parents=True, exist_ok=True)
    rule_files = [(shipped_dir / name).resolve() for name in shipped.get("rule_files", [])]
    for name, content in (extra_rules or {}).items():
        (root / name).write_text(json.dumps(content, indent=1))
        rule_files.append(root / name)
    port = free_port()
    rendered = render_config(shipped, targets=targets, rule_files=rule_files, port=port, interval=interval)
    server = Prometheus(root=root, binary=binary, port=port)
    server.conf.write_text(json.dumps(rendered, indent=1))
    promtool = Path(binary).with_name("promtool")
    if promtool.exists():
        checked = subprocess.run([str(promtool), "check", "config", str(server.conf)], capture_output=True, text=True,
                                 timeout=60)
        if checked.returncode != 0:
            raise RuntimeError(f"promtool rejects the rendered config:\n{checked.stdout}{checked.stderr}")
    return server
