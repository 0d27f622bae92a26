"""Helpers for end-to-end tests that run the real ``kloyst`` command as a subprocess.

Each process gets a clean environment (only what the test passes, plus ``PATH``) and its
output goes to files (a pipe nobody reads would block it). The fixtures built on these
live in this directory's conftest.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from kloyst.testing.deployment import KLOYST  # the e2e tests import it from here

REPO = Path(__file__).resolve().parents[2]


def kloyst(*args: str, env: dict[str, str], cwd: Path | None = None,
           timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``kloyst <args>`` to completion."""
    return subprocess.run([KLOYST, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def http_json(url: str, body: dict | None = None, timeout: float = 5) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"} if data else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


@dataclass
class Service:
    """A ``kloyst run`` process."""

    process: subprocess.Popen
    stdout: Path
    stderr: Path

    def output(self) -> str:
        return self.stdout.read_text() + self.stderr.read_text()

    def wait_for(self, condition, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            if self.process.poll() is not None:
                pytest.fail(f"kloyst exited with {self.process.returncode} while waiting for {what}:\n"
                            f"{self.output()}")
            time.sleep(0.1)
        pytest.fail(f"timed out waiting for {what}:\n{self.output()}")

    def wait_for_http(self, url: str, timeout: float = 60) -> None:
        def answers() -> bool:
            try:
                return http_json(url, timeout=1)[0] == 200
            except (OSError, ValueError):
                return False

        self.wait_for(answers, f"{url} to answer 200", timeout)

    def wait_for_output(self, text: str, timeout: float = 60) -> None:
        self.wait_for(lambda: text in self.output(), f"{text!r} in the output", timeout)

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM, then the exit status (fails the test when it does not stop in time)."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"kloyst did not stop within {timeout}s of SIGTERM:\n{self.output()}")
