"""The shipped nginx config (``nginx/`` in the repository), run by a real nginx in a temporary prefix.

The tests must exercise the files that are deployed, so they are copied as they are and only what
differs between the server and a test machine is changed, all of it in :func:`render`:

* paths the server has and a test machine does not: certificates (``/etc/letsencrypt/live/``),
  log files (``/var/log/nginx/``) and certbot's webroot (``/var/www/letsencrypt``);
* the listen ports, moved to free ports on 127.0.0.1: ``nginx -t`` binds them too, and 80 and 443
  need root and may be taken by the machine's own nginx;
* for the end-to-end test only, the upstream ports (the free ports the test's Kloyst and stubs got).

Every substitution must match, so a path renamed in ``nginx/`` fails the render instead of silently
testing something else. Relative paths in the shipped files (``snippets/…``, ``htpasswd/…``) resolve
against the directory of the main config file, ``/etc/nginx`` on the server and the prefix here, so
they need no change.

The main config is Debian's own ``/etc/nginx/nginx.conf`` from the installed package with its paths
moved into the prefix: the site is tested inside the same ``http {}`` that includes it on the server,
so a directive Debian already sets there (``ssl_protocols``…) repeated at http level is caught here
(nginx merges the two with a warning; the config test allows none).

As with clamd (:mod:`kloyst.testing.clamd`), a missing nginx is a failure, never a skip.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from kloyst.testing.processes import free_port, stop_process
from kloyst.testing.tls import self_signed_certificate

MISSING = ("nginx is not installed: the nginx tests run the shipped config (nginx/) with a real nginx. Install "
           "Debian's nginx (apt-get install nginx); `make test` (scripts/run-tests) does.")
DEBIAN_CONF = Path("/etc/nginx/nginx.conf")
SITE = Path("sites/kloyst-staging.conf")
SNIPPETS = Path("snippets")
LETSENCRYPT_LIVE = "/etc/letsencrypt/live/"
LOG_DIR = "/var/log/nginx/"
ACME_WEBROOT = "/var/www/letsencrypt"
# Debian builds nginx with its temporary directories under /var/lib/nginx; nginx creates them at start.
TEMP_PATHS = ("client_body_temp_path", "proxy_temp_path", "fastcgi_temp_path", "uwsgi_temp_path", "scgi_temp_path")


def nginx_binary() -> str:
    binary = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx")
                                            if Path(p).exists()), None)
    if binary is None:
        raise RuntimeError(MISSING)
    return binary


def _no_match(where: str, pattern: str) -> ValueError:
    return ValueError(f"{where}: nothing matches {pattern!r}; the nginx config changed, so kloyst/testing/nginx.py "
                      "must change with it")


def _replace(text: str, pattern: str, replacement: str, *, where: str) -> str:
    """``text`` with every match of the regex ``pattern`` replaced; at least one match is required."""
    new, count = re.subn(pattern, lambda match: match.expand(replacement), text, flags=re.MULTILINE)
    if count == 0:
        raise _no_match(where, pattern)
    return new


def _main_conf(root: Path) -> str:
    """Debian's nginx.conf with its paths moved into ``root`` and the shipped site in place of the host's."""
    if not DEBIAN_CONF.exists():
        raise RuntimeError(f"{DEBIAN_CONF} is missing: {MISSING}")
    text = DEBIAN_CONF.read_text()
    where = str(DEBIAN_CONF)
    # nginx ignores `user` (with a warning) unless it runs as root; as root, Debian's www-data workers
    # could not read the test's private temporary directory.
    text = _replace(text, r"^user\s+[^;]+;", "user root;" if os.geteuid() == 0 else "", where=where)
    text = _replace(text, r"^pid\s+[^;]+;", f"pid {root / 'nginx.pid'};", where=where)
    text = _replace(text, r"^error_log\s+[^;]+;", f"error_log {root / 'logs' / 'error.log'};", where=where)
    text = _replace(text, r"^(\s*)access_log\s+[^;]+;", rf"\g<1>access_log {root / 'logs' / 'access.log'};",
                    where=where)
    # The host's own additions are not part of what is shipped.
    text = _replace(text, r"^\s*include\s+/etc/nginx/conf\.d/\*\.conf;", "", where=where)
    temp = "".join(f"\t{name} {root / 'temp' / name};\n" for name in TEMP_PATHS)
    return _replace(text, r"^\s*include\s+/etc/nginx/sites-enabled/\*;", f"{temp}\tinclude sites-enabled/*;",
                    where=where)


def htpasswd_line(user: str, password: str) -> str:
    """``user:hash`` with a SHA-512 crypt hash from ``openssl passwd -6``, as nginx/README.md tells operators."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not installed: the nginx tests hash basic-auth passwords with it, as the "
                           "operators do. Install it (apt-get install openssl); `make test` does.")
    hashed = subprocess.run([openssl, "passwd", "-6", "-stdin"], input=password, capture_output=True, text=True,
                            check=True).stdout.strip()
    return f"{user}:{hashed}\n"


@dataclass
class NginxPrefix:
    """A rendered config: ``root/nginx.conf`` and everything it includes, ready for :meth:`check` or :meth:`start`."""

    root: Path
    binary: str
    certificate: Path  # what every TLS host presents; trust it in the client
    ports: dict[int, int]  # shipped listen port → the port on 127.0.0.1 it became
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def https_port(self) -> int:
        return self.ports[443]

    @property
    def http_port(self) -> int:
        return self.ports[80]

    @property
    def conf(self) -> Path:
        return self.root / "nginx.conf"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def acme_webroot(self) -> Path:
        return self.root / "acme"

    def command(self, *args: str) -> list[str]:
        return [self.binary, "-p", f"{self.root}/", "-c", str(self.conf), *args]

    def check(self) -> subprocess.CompletedProcess:
        """``nginx -t`` on the rendered config; nginx reports on stderr."""
        return subprocess.run(self.command("-t"), capture_output=True, text=True, timeout=60)

    def start(self, timeout: float = 15.0) -> NginxPrefix:
        """Run nginx in the foreground (stopped by :meth:`stop`) and wait until its TLS port accepts."""
        with open(self.logs / "stderr.log", "wb") as stderr:
            self.process = subprocess.Popen(self.command("-g", "daemon off;"), stdin=subprocess.DEVNULL,
                                            stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode} at startup:\n{self.errors()}")
            try:
                socket.create_connection(("127.0.0.1", self.https_port), timeout=0.5).close()
                return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nginx did not accept on 127.0.0.1:{self.https_port} within {timeout}s:\n{self.errors()}")

    def stop(self) -> None:
        """SIGTERM (nginx's fast shutdown) to the master started here, then wait for it."""
        stop_process(self.process)

    def errors(self) -> str:
        return "\n".join(path.read_text(errors="replace") for path in sorted(self.logs.glob("*.log"))
                         if "access" not in path.name)


def render(source: Path, root: Path, *, users: dict[str, str], upstreams: dict[int, int] | None = None) -> NginxPrefix:
    """Copy the config in ``source`` (the repository's ``nginx/``) into ``root``, changing only what is listed.

    ``users`` become every ``auth_basic_user_file`` the config names. ``upstreams`` maps a shipped
    upstream port to the one to use on 127.0.0.1 (``{3000: 51234}``); ``nginx -t`` needs none, it
    connects to nothing. Every listen port gets a free port (:attr:`NginxPrefix.ports`).
    """
    binary = nginx_binary()  # before anything is written: a missing nginx says so first
    root.mkdir(parents=True, exist_ok=True)
    files = {SITE: (source / SITE).read_text()}
    files.update({SNIPPETS / path.name: path.read_text() for path in sorted((source / SNIPPETS).glob("*.conf"))})
    shipped = "\n".join(files.values())

    def everywhere(pattern: str, replacement: str) -> None:
        if not re.search(pattern, shipped, flags=re.MULTILINE):
            raise _no_match(str(source), pattern)
        for name, text in files.items():
            files[name] = re.sub(pattern, lambda match: match.expand(replacement), text, flags=re.MULTILINE)

    everywhere(re.escape(LETSENCRYPT_LIVE), f"{root / 'letsencrypt' / 'live'}/")
    everywhere(re.escape(LOG_DIR), f"{root / 'logs'}/")
    everywhere(re.escape(ACME_WEBROOT), str(root / "acme"))
    listen = {int(port): free_port() for port in re.findall(r"^\s*listen\s+(\d+)\b", shipped, flags=re.MULTILINE)}
    for shipped_port, port in listen.items():
        everywhere(rf"^(\s*)listen\s+{shipped_port}\b", rf"\g<1>listen 127.0.0.1:{port}")
    for shipped_port, port in (upstreams or {}).items():
        everywhere(rf"\bserver\s+127\.0\.0\.1:{shipped_port};", f"server 127.0.0.1:{port};")

    for name, text in files.items():
        target = root / ("sites-enabled" if name == SITE else SNIPPETS) / name.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    (root / "nginx.conf").write_text(_main_conf(root))
    for directory in ("logs", "temp", "acme"):
        (root / directory).mkdir(exist_ok=True)

    # One certificate naming every host stands in for certbot's one per host.
    pem_files = [(directive.name, Path(directive.args[0])) for text in files.values()
                 for directive in walk(parse(text)) if directive.name in ("ssl_certificate", "ssl_certificate_key")]
    hosts = sorted({path.parent.name for _, path in pem_files})
    certificate, key = self_signed_certificate(hosts, root / "certificate")
    for name, path in pem_files:
        if root not in path.parents:  # a path the render did not move: never write outside the prefix
            raise ValueError(f"{name} {path}: not a path kloyst/testing/nginx.py moves; add it there")
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(certificate if name == "ssl_certificate" else key, path)
    for user_file in sorted(set(re.findall(r"auth_basic_user_file\s+([^;\s]+);", shipped))):
        if Path(user_file).is_absolute():  # the render would write the test's users over the host's file
            raise ValueError(f"auth_basic_user_file {user_file}: keep it relative to /etc/nginx (htpasswd/...)")
        target = root / user_file  # resolved against the main config's directory, as on the server
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("".join(htpasswd_line(user, password) for user, password in users.items()))

    return NginxPrefix(root=root, binary=binary, certificate=certificate, ports=listen)


@dataclass
class Directive:
    """One directive of a parsed config: ``location = /v1/imports { … }`` is ``Directive("location", ["=",
    "/v1/imports"], [...])``."""

    name: str
    args: list[str]
    block: list[Directive] | None = None

    def children(self, name: str, *args: str) -> list[Directive]:
        """The directives ``name`` directly inside this block whose arguments start with ``args``."""
        return [child for child in self.block or () if child.name == name and child.args[:len(args)] == list(args)]

    def child(self, name: str, *args: str) -> Directive:
        found = self.children(name, *args)
        if len(found) != 1:
            raise LookupError(f"{len(found)} '{' '.join([name, *args])}' in '{' '.join([self.name, *self.args])}'")
        return found[0]

    def value(self, name: str) -> str:
        return " ".join(self.child(name).args)


# Comments, quoted strings, braces and semicolons, bare words: enough for the shipped files (no regex
# locations with braces in them).
_TOKEN = re.compile(r"""#[^\n]*|'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[{};]|[^\s{};]+""")


def parse(text: str) -> Directive:
    """``text`` (one config file, includes not followed) as the block of a root :class:`Directive`."""
    root = Directive("", [], [])
    blocks: list[list[Directive]] = [[]]  # the open blocks, innermost last
    root.block = blocks[0]
    words: list[str] = []
    for match in _TOKEN.finditer(text):
        token = match.group()
        if token.startswith("#"):
            continue
        if token == ";":
            blocks[-1].append(Directive(words[0], words[1:]))
            words = []
        elif token == "{":
            block: list[Directive] = []
            blocks[-1].append(Directive(words[0], words[1:], block))
            blocks.append(block)
            words = []
        elif token == "}":
            blocks.pop()
        else:
            words.append(token[1:-1] if token[0] in "'\"" else token)
    return root


def walk(directive: Directive):
    """``directive`` and every directive inside it, depth first."""
    yield directive
    for child in directive.block or ():
        yield from walk(child)


def server(config: Directive, name: str, port: str = "443") -> Directive:
    """The server block of ``config`` serving ``name`` on ``port``."""
    found = [block for block in config.children("server")
             if name in block.value("server_name").split() and block.value("listen").split()[0] == port]
    if len(found) != 1:
        raise LookupError(f"{len(found)} server blocks for {name}:{port}")
    return found[0]


def size_bytes(value: str) -> int:
    """An nginx size (``2m``, ``51264k``, ``1024``) in bytes."""
    units = {"k": 1024, "m": 1024 * 1024, "g": 1024 ** 3}
    suffix = value[-1].lower()
    return int(value[:-1]) * units[suffix] if suffix in units else int(value)
