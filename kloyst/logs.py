"""Logging: JSON lines in three daily files, levels and retention from settings.

- ``network-YYYY-MM-DD.log``: one line per HTTP request/response (method, path, status,
  duration, client, vendor, request id) — never bodies or the Authorization header;
- ``exception-YYYY-MM-DD.log``: every record at ERROR or above, with the traceback;
- ``app-YYYY-MM-DD.log``: everything else from Kloyst and its plugins.

Files roll over at UTC midnight and files older than ``kloyst.log.retention_days`` are
deleted. Promtail (monitoring/) tails them; the ``kind`` field and file name label them.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
import threading
from pathlib import Path

_RESERVED = set(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, kind: str, service: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "kind": self.kind,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if self.service:
            entry["service"] = self.service
        for key, value in vars(record).items():
            if key not in _RESERVED and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


class DailyFileHandler(logging.Handler):
    """Writes to ``<dir>/<kind>-<UTC date>.log``, switching files at midnight and pruning old ones."""

    def __init__(self, directory: str, kind: str, retention_days: int) -> None:
        super().__init__()
        self.directory = Path(directory)
        self.kind = kind
        self.retention_days = retention_days
        self._date: dt.date | None = None
        self._stream = None
        self._switch_lock = threading.Lock()

    @staticmethod
    def _today() -> dt.date:
        return dt.datetime.now(dt.timezone.utc).date()

    def _current_stream(self):
        today = self._today()
        if today != self._date:
            with self._switch_lock:
                if today != self._date:
                    self.directory.mkdir(parents=True, exist_ok=True)
                    if self._stream is not None:
                        self._stream.close()
                    path = self.directory / f"{self.kind}-{today.isoformat()}.log"
                    self._stream = open(path, "a", encoding="utf-8")  # noqa: SIM115 - kept open, closed in close()
                    self._date = today
                    self._prune(today)
        return self._stream

    def _prune(self, today: dt.date) -> None:
        cutoff = today - dt.timedelta(days=self.retention_days)
        for path in self.directory.glob(f"{self.kind}-*.log"):
            try:
                day = dt.date.fromisoformat(path.stem.removeprefix(f"{self.kind}-"))
            except ValueError:
                continue
            if day < cutoff:
                path.unlink(missing_ok=True)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            stream = self._current_stream()
            stream.write(line + "\n")
            stream.flush()
        except Exception:
            self.handleError(record)

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        super().close()


class _BelowError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR


_configured_marker = "_kloyst_handler"


def configure(settings, service: str = "") -> None:
    """Install Kloyst's handlers on the root and network loggers (idempotent: replaces earlier ones)."""
    directory = settings["kloyst.log.dir"]
    retention = settings["kloyst.log.retention_days"]
    root = logging.getLogger()
    network = logging.getLogger("kloyst.network")
    for logger in (root, network):
        for old in list(logger.handlers):
            if getattr(old, _configured_marker, False):
                logger.removeHandler(old)
                old.close()

    def handler(kind: str, level: int | str, below_error: bool = False) -> logging.Handler:
        h = DailyFileHandler(directory, kind, retention)
        h.setLevel(level)
        h.setFormatter(JsonFormatter(kind, service))
        if below_error:
            h.addFilter(_BelowError())
        setattr(h, _configured_marker, True)
        return h

    root.setLevel(settings["kloyst.log.level"])
    root.addHandler(handler("app", settings["kloyst.log.level"], below_error=True))
    root.addHandler(handler("exception", logging.ERROR))
    if settings["kloyst.log.console"]:
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(settings["kloyst.log.level"])
        console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        setattr(console, _configured_marker, True)
        root.addHandler(console)
    network.setLevel(settings["kloyst.log.network_level"])
    network.propagate = False
    network.addHandler(handler("network", settings["kloyst.log.network_level"]))
    logging.captureWarnings(True)
