"""Kloyst's image (``docker/Dockerfile``), built and run by a real Docker engine in the tests.

The test machines reach no image registry, so the Dockerfile's ``python:3.11-slim-bookworm`` cannot
be pulled. What stands in for it is made from Debian's own packages, the same Python 3.11 of
bookworm: ``debootstrap --variant=minbase`` from the mirror the machine's apt already uses,
``docker import``-ed, and a small Dockerfile on top installing ``python3``, ``python3-venv`` and
``python3-pip`` with ``python`` linked to ``python3``. The project's Dockerfile is then built
unchanged with ``--build-arg PYTHON_IMAGE=<that base>``.

The base also trusts the machine's certificate authorities (outbound HTTPS here goes through a
proxy whose CA only the host's bundle holds; pip fails on it otherwise with
``CERTIFICATE_VERIFY_FAILED``, reported as a baffling ``ResolutionImpossible``). The host's bundle
is copied in *after* the apt step, which regenerates the file without it. That belongs to the test
base only: the project's Dockerfile and the image staging runs never see it.

Building the base takes about a minute, so it is kept between runs on one machine: its tag holds a
hash of everything it is made from (the suite, the mirror, the base Dockerfile, the CA bundle), it is
built only when no image has that tag, and a lock on a file makes sure two pytest-xdist workers never
build at once (the second waits and finds the image). Kloyst's own image reuses Docker's layer cache,
so an unchanged tree rebuilds in seconds.

Docker runs with the classic builder (``DOCKER_BUILDKIT=0``: BuildKit would fetch the
``# syntax=`` frontend from a registry, the classic builder ignores the line) and on the host
network for builds and containers alike, so that pip in a build reaches the package index the way
the host does, and every container listens on 127.0.0.1 next to the test PostgreSQL and Redis.
Traffic never goes to a container's bridge address.

Docker is needed, never skipped, where it can run: as root, or with access to the engine's socket.
``make test`` (scripts/run-tests) starts ``dockerd`` when none answers and stops it afterwards.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

SUITE = "bookworm"  # the Debian of python:3.11-slim-bookworm, which the base stands in for
DEFAULT_MIRROR = "http://deb.debian.org/debian"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
SOCKET = Path("/var/run/docker.sock")
# Set it to an image with Python 3.11 on Debian bookworm (python:3.11-slim-bookworm where a registry is
# reachable) to use that instead of building the base from Debian's packages, which needs root.
BASE_IMAGE_VARIABLE = "KLOYST_TEST_PYTHON_IMAGE"
BASE_REPOSITORY = "kloyst-test/python"
DEBIAN_REPOSITORY = "kloyst-test/debian"
LOCK = Path(tempfile.gettempdir()) / "kloyst-test-docker.lock"
BASE_DOCKERFILE = f"""\
FROM {{debian}}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip \\
 && rm -rf /var/lib/apt/lists/* \\
 && ln -s /usr/bin/python3 /usr/local/bin/python
# After apt: installing ca-certificates (python3-pip needs it) writes the bundle without the proxy's CA.
COPY ca-certificates.crt {HOST_CA_BUNDLE}
ENV PIP_CERT={HOST_CA_BUNDLE} SSL_CERT_FILE={HOST_CA_BUNDLE} REQUESTS_CA_BUNDLE={HOST_CA_BUNDLE}
"""
MISSING = ("Docker is not installed: the image tests build docker/Dockerfile and run it with a real engine. Install "
           "Debian's docker.io and debootstrap (apt-get install docker.io debootstrap); `make test` does, and starts "
           "dockerd.")


class DockerError(RuntimeError):
    """A docker command failed; the message holds its output."""


def unavailable() -> str | None:
    """Why Docker truly cannot run here (``None``: it can, so the image tests must run)."""
    if os.geteuid() == 0 or os.environ.get("DOCKER_HOST"):
        return None
    if SOCKET.exists() and os.access(SOCKET, os.R_OK | os.W_OK):
        return None
    return (f"Docker cannot run here: not root and no usable Docker socket ({SOCKET}). Run the tests as root "
            "(`make test` does on CI) or as a member of the docker group.")


def cli(*args: str, timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """``docker <args…>`` with the classic builder; its output as text. Raises :class:`DockerError` on failure
    unless ``check`` is false."""
    binary = shutil.which("docker")
    if binary is None:
        raise RuntimeError(MISSING)
    result = subprocess.run([binary, *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "DOCKER_BUILDKIT": "0"}, **kwargs)
    if check and result.returncode != 0:
        raise DockerError(f"docker {' '.join(args)} exited with {result.returncode}:\n"
                          f"{(result.stdout + result.stderr)[-4000:]}")
    return result


def engine_version() -> str:
    """The engine's version; a clear error when no engine answers."""
    result = cli("version", "--format", "{{.Server.Version}}", timeout=30, check=False)
    if result.returncode != 0:
        raise RuntimeError("no Docker engine answers (`docker version` failed); start dockerd, as `make test` "
                           f"(scripts/run-tests) does:\n{result.stderr.strip()}")
    return result.stdout.strip()


def image_exists(reference: str) -> bool:
    return cli("image", "inspect", reference, check=False, timeout=30).returncode == 0


@contextlib.contextmanager
def build_lock(path: Path = LOCK) -> Iterator[None]:
    """Held while an image is built: one build at a time on this machine, whichever process asks."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def debian_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian mirror this machine's apt installs ``SUITE``'s main from (``DEFAULT_MIRROR`` when none is found)."""
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.list")),
             *sorted((sources / "sources.list.d").glob("*.sources"))]
    for path in files:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":  # deb822: blank-line separated stanzas of "Field: value"
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, flags=re.MULTILINE))
                if ("deb" in fields.get("Types", "").split() and SUITE in fields.get("Suites", "").split()
                        and "main" in fields.get("Components", "").split() and fields.get("URIs")):
                    return fields["URIs"].split()[0].rstrip("/")
        else:  # one-line style: deb [options] URI SUITE COMPONENT…
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 4 and words[0] == "deb" and words[2] == SUITE and "main" in words[3:]:
                    return words[1].rstrip("/")
    return DEFAULT_MIRROR


def _hash(*parts: bytes | str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode() if isinstance(part, str) else part)
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def base_image(work: Path, log: Path | None = None) -> str:
    """The Python base for ``docker/Dockerfile`` (its tag), built from Debian's packages when this machine has none.

    ``work`` holds the build's scratch files (debootstrap's root file system, removed once imported);
    debootstrap's and docker's output is appended to ``log`` (``work/base-build.log`` by default).
    """
    chosen = os.environ.get(BASE_IMAGE_VARIABLE)
    if chosen:
        if not image_exists(chosen):
            raise RuntimeError(f"{BASE_IMAGE_VARIABLE}={chosen}: no such image on this engine")
        return chosen
    mirror = debian_mirror()
    ca_bundle = HOST_CA_BUNDLE.read_bytes()
    debian = f"{DEBIAN_REPOSITORY}:{SUITE}-{_hash(SUITE, mirror)}"
    tag = f"{BASE_REPOSITORY}:3.11-{SUITE}-{_hash(debian, BASE_DOCKERFILE, ca_bundle)}"
    if image_exists(tag):
        return tag
    log = log or work / "base-build.log"
    with build_lock():
        if image_exists(tag):  # another worker built it while this one waited
            return tag
        work.mkdir(parents=True, exist_ok=True)
        if not image_exists(debian):
            _import_debian(debian, mirror, work, log)
        context = work / "base-context"
        context.mkdir(exist_ok=True)
        (context / "Dockerfile").write_text(BASE_DOCKERFILE.format(debian=debian))
        (context / "ca-certificates.crt").write_bytes(ca_bundle)
        _logged(log, cli("build", "--force-rm", "--network", "host", "--tag", tag, str(context), timeout=900))
    return tag


def _import_debian(tag: str, mirror: str, work: Path, log: Path) -> None:
    debootstrap = shutil.which("debootstrap") or next(
        (p for p in ("/usr/sbin/debootstrap", "/sbin/debootstrap") if Path(p).exists()), None)
    if debootstrap is None:
        raise RuntimeError(MISSING)
    if os.geteuid() != 0:
        raise RuntimeError(f"debootstrap needs root to make the test base image; run as root, or set "
                           f"{BASE_IMAGE_VARIABLE} to a Python 3.11 bookworm image this engine has")
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=work))
    try:
        with log.open("a") as output:
            done = subprocess.run([debootstrap, "--variant=minbase", SUITE, str(rootfs), mirror], stdout=output,
                                  stderr=subprocess.STDOUT, timeout=900)
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap {SUITE} from {mirror} exited with {done.returncode}; see {log}:\n"
                               f"{log.read_text(errors='replace')[-3000:]}")
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            _logged(log, cli("import", "-", tag, stdin=tar.stdout, timeout=600))
        if tar.returncode != 0:
            raise RuntimeError(f"tar of {rootfs} exited with {tar.returncode}")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def _logged(log: Path, result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    with log.open("a") as output:
        output.write(result.stdout + result.stderr)
    return result


def build_image(root: Path, base: str, tag: str, log: Path) -> str:
    """``docker/Dockerfile``'s runtime target built from the checkout at ``root`` on ``base``; the image's id.

    The id, not ``tag``, is what to run: another checkout on the same machine may move the tag.
    """
    iidfile = log.with_suffix(".iid")
    with build_lock():
        # The build stage under a tag of its own too: untagged, each rebuild would leave it behind, dangling.
        for target, target_tag in (("build", f"{tag}-build"), ("runtime", tag)):
            previous = cli("image", "inspect", "--format", "{{.Id}}", target_tag, check=False,
                           timeout=30).stdout.strip()
            _logged(log, cli("build", "--force-rm", "--network", "host", "--file",
                             str(root / "docker" / "Dockerfile"), "--target", target, "--build-arg",
                             f"PYTHON_IMAGE={base}", "--iidfile", str(iidfile), "--tag", target_tag, str(root),
                             timeout=1800))
            image_id = iidfile.read_text().strip()
            if previous and previous != image_id:
                # The image the tag named before, untagged now: removed so that run after run does not fill the
                # disk (Docker refuses while a container still uses it, which is fine).
                cli("image", "rm", previous, check=False, timeout=120)
    return image_id


def container_state(name: str) -> dict:
    """``State`` of a container as ``docker inspect`` reports it (``Status``, ``ExitCode``, ``Health``…)."""
    return json.loads(cli("inspect", "--format", "{{json .State}}", name, timeout=30).stdout)


def wait_healthy(names: list[str], timeout: float = 180) -> None:
    """Until every container's Docker health check says ``healthy``; fails with the logs of one that exits or
    stays unhealthy."""
    deadline = time.monotonic() + timeout
    waiting = list(names)
    while waiting:
        for name in list(waiting):
            state = container_state(name)
            if state["Status"] != "running":
                raise RuntimeError(f"container {name} is {state['Status']} (exit {state['ExitCode']}):\n{logs(name)}")
            if state.get("Health", {}).get("Status") == "healthy":
                waiting.remove(name)
        if waiting and time.monotonic() > deadline:
            name = waiting[0]
            probes = container_state(name).get("Health", {}).get("Log", [])
            raise RuntimeError(f"container {name} not healthy within {timeout:.0f} s; last probe: "
                               f"{probes[-1] if probes else None}\n{logs(name)}")
        if waiting:
            time.sleep(0.5)


def logs(name: str, tail: int = 60) -> str:
    result = cli("logs", "--tail", str(tail), name, check=False, timeout=30)
    return result.stdout + result.stderr
