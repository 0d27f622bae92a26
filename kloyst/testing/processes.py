"""The real helper processes the tests start (clamd, nginx, kloyst itself): a free port, a clean stop, a wait."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on right now (the OS picks it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(process: subprocess.Popen | None, *, timeout: float = 10) -> None:
    """SIGTERM ``process`` if it still runs and wait for it; SIGKILL when it does not stop within ``timeout``."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def eventually(fetch: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float = 60,
               pause: float = 0.3) -> T:
    """``fetch()`` again every ``pause`` seconds until ``done`` says yes, and return that value; after ``timeout``
    seconds an ``AssertionError`` that names ``what`` was awaited and shows the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {value}")
        time.sleep(pause)
