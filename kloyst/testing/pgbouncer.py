"""A private PgBouncer in transaction pooling in front of the test PostgreSQL, for Kloyst's processes to use.

Operators put PgBouncer between many Kloyst processes and PostgreSQL (docs/operations.md, "PgBouncer");
in ``pool_mode = transaction`` a client holds a server connection only for one transaction, so
anything a session keeps (a ``SET``, a session advisory lock, ``LISTEN``, a prepared statement, a
temporary table outliving its transaction) leaks to other clients or is lost. The e2e and chaos
suites run their deployments through this one so that such a use fails there, not in production.

It is Debian's ``pgbouncer`` run as a process of its own: its own ini in a temporary directory, a
free port on 127.0.0.1, every database (``* = host=… port=…``) of the test PostgreSQL, trust
authentication for the user of the test URL. The pool is deliberately smaller than the clients
(:data:`POOL_SIZE` server connections per database against a multi-process deployment's dozens of
pooled client connections), so that clients really share server connections. As root, PgBouncer
refuses to run unless told a user to switch to: it reads its ini first, then runs as ``postgres``
(or ``nobody``), so only its unix socket directory needs to belong to that user.

As with clamd (:mod:`kloyst.testing.clamd`), a missing pgbouncer is a failure, never a skip.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from kloyst.testing.processes import free_port, stop_process

MISSING = ("pgbouncer is not installed: the e2e and chaos suites run Kloyst through a real PgBouncer in transaction "
           "pooling. Install Debian's pgbouncer (apt-get install pgbouncer); `make test` (scripts/run-tests) does.")
# Server connections per (database, user): a chaos deployment's five processes open dozens of client
# connections (SQLAlchemy's pool of 10 + 20 overflow each), so this many makes them share.
POOL_SIZE = 8
MAX_CLIENT_CONN = 500  # every client connection of a deployment and its CLI runs, with room to spare


def pgbouncer_binary() -> str:
    binary = shutil.which("pgbouncer") or next((p for p in ("/usr/sbin/pgbouncer", "/usr/local/sbin/pgbouncer")
                                                if Path(p).exists()), None)
    if binary is None:
        raise RuntimeError(MISSING)
    return binary


def _run_as() -> str | None:
    """The user a root PgBouncer switches to (it refuses to run as root); None when not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("pgbouncer refuses to run as root and there is neither a postgres nor a nobody user to run "
                       "it as")


class PgBouncer:
    """``start()`` a PgBouncer in ``root`` in front of the server of ``upstream_url``; ``url()`` routes a URL through
    it; ``stop()`` ends it.

    ``upstream_url`` is any URL of the server (its database is not used: every database is served).
    ``pool_size`` is ``default_pool_size``, the server connections per database and user.
    """

    def __init__(self, root: Path, upstream_url: str, *, pool_size: int = POOL_SIZE,
                 max_client_conn: int = MAX_CLIENT_CONN) -> None:
        self.root = Path(root)
        self.upstream = make_url(upstream_url)
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.port = 0
        self.process: subprocess.Popen | None = None
        self._socket_dir: str | None = None
        self._log: BinaryIO | None = None

    @property
    def log_path(self) -> Path:
        return self.root / "pgbouncer.log"

    def url(self, database_url: str) -> str:
        """``database_url`` (a database of the upstream server) through this PgBouncer instead."""
        return (make_url(database_url).set(host="127.0.0.1", port=self.port)
                .render_as_string(hide_password=False))

    def _ini(self, user: str) -> str:
        upstream = self.upstream
        server = f"host={upstream.host or '127.0.0.1'} port={upstream.port or 5432}"
        if upstream.password:
            server += f" password={upstream.password}"
        return "\n".join([
            "[databases]",
            f"* = {server}",
            "[pgbouncer]",
            "listen_addr = 127.0.0.1",
            f"listen_port = {self.port}",
            f"unix_socket_dir = {self._socket_dir}",
            "auth_type = trust",
            f"auth_file = {self.root / 'userlist.txt'}",
            "pool_mode = transaction",
            f"default_pool_size = {self.pool_size}",
            "min_pool_size = 0",
            "reserve_pool_size = 0",
            f"max_client_conn = {self.max_client_conn}",
            # A client starved of a server connection fails within a minute, not after the default two.
            "query_wait_timeout = 60",
            # One line per connection would drown the log: a deployment opens hundreds.
            "log_connections = 0",
            "log_disconnections = 0",
            "",
        ])

    def start(self, timeout: float = 15.0) -> PgBouncer:
        """Run PgBouncer in the foreground (stopped by :meth:`stop`) and wait until a query through it answers."""
        binary = pgbouncer_binary()
        run_as = _run_as()
        self.root.mkdir(parents=True, exist_ok=True)
        user = self.upstream.username or "postgres"
        (self.root / "userlist.txt").write_text(f'"{user}" ""\n')
        # The socket directory must be reachable by the user PgBouncer runs as: not under a private pytest tmp.
        self._socket_dir = tempfile.mkdtemp(prefix="kloyst-pgbouncer-")
        if run_as is not None:
            shutil.chown(self._socket_dir, user=run_as)
        self.port = self.port or free_port()
        ini = self.root / "pgbouncer.ini"
        ini.write_text(self._ini(user))
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed in stop()
        self.process = subprocess.Popen([binary, *(("-u", run_as) if run_as else ()), str(ini)],
                                        stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT)
        probe = sa.create_engine(self.url(self.upstream.render_as_string(hide_password=False)), poolclass=NullPool,
                                 connect_args={"connect_timeout": 2})
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    self.stop()
                    raise RuntimeError(f"pgbouncer exited with {code} at startup:\n{self.errors()}")
                try:
                    with probe.connect() as connection:
                        connection.exec_driver_sql("SELECT 1")
                    return self
                except sa.exc.OperationalError:
                    time.sleep(0.05)
        finally:
            probe.dispose()
        self.stop()
        raise RuntimeError(f"pgbouncer did not answer on 127.0.0.1:{self.port} within {timeout}s:\n{self.errors()}")

    def stop(self) -> None:
        """SIGTERM (PgBouncer's immediate shutdown) to the process started here, then wait for it."""
        stop_process(self.process)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self._socket_dir is not None:
            shutil.rmtree(self._socket_dir, ignore_errors=True)
            self._socket_dir = None

    def errors(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:] if self.log_path.exists() else ""


@contextlib.contextmanager
def running(root: Path, upstream_url: str, **options) -> Iterator[PgBouncer]:
    """A started :class:`PgBouncer` (``options`` as its constructor's) for the ``with`` block, stopped after it."""
    bouncer = PgBouncer(root, upstream_url, **options).start()
    try:
        yield bouncer
    finally:
        bouncer.stop()
