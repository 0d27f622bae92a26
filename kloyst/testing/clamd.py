"""A private clamd for tests: offline, private EICAR signatures, ready in well under a second.

The official signature databases take tens of seconds and ~1 GB to load and need the
network; clamd starts in ~50 ms with one tiny signature set. Three
files cover what the import tests need: ``.hdb`` (the EICAR file's MD5, also matched on
files inside archives), ``.ndb`` (the EICAR bytes anywhere in a file, e.g. a CSV row or a
decompressed sheet XML) and ``.ldb`` with ``::wa`` (the same bytes in UTF-16). Signature
names come back with a ``.UNOFFICIAL`` suffix.

The server runs as the invoking user on a free port under a temporary directory, and is
stopped by its own pid (terminate, then wait, so no zombie is left).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

from kloyst.clamav import Clamd
from kloyst.testing.processes import free_port, stop_process

EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_MD5 = "44d88612fea8a8f36de82e1278abb02f"
SIGNATURES = {
    "test.hdb": f"{EICAR_MD5}:{len(EICAR)}:Eicar-Test-Signature\n",
    "test.ndb": f"Eicar-Test-Signature-Body:0:*:{EICAR.hex()}\n",
    "test.ldb": f"Eicar-Test-Signature-Wide;Target:0;0;{EICAR.hex()}::wa\n",
}
MISSING = ("clamd is not installed: the import tests scan with a real clamd. Install clamav-daemon "
           "(apt-get install clamav-daemon); `make test` does.")


class ClamdServer:
    """``start()`` a clamd in ``root``; ``address`` is its ``tcp://`` address; ``stop()`` ends it.

    ``port`` 0 picks a free port at ``start()``; a port given up front lets a test hand the
    address to Kloyst before clamd runs, as with a scanner that comes up after the upload.
    """

    def __init__(self, root: Path, *, stream_max_bytes: int = 50 * 1024 * 1024, port: int = 0) -> None:
        self.root = Path(root)
        self.stream_max_bytes = stream_max_bytes
        self.port = port
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> ClamdServer:
        binary = shutil.which("clamd") or next((p for p in ("/usr/sbin/clamd", "/usr/local/sbin/clamd")
                                               if Path(p).exists()), None)
        if binary is None:
            raise RuntimeError(MISSING)
        (self.root / "db").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(exist_ok=True)
        for name, line in SIGNATURES.items():
            (self.root / "db" / name).write_text(line)
        self.port = self.port or free_port()
        conf = self.root / "clamd.conf"
        conf.write_text("\n".join([
            f"DatabaseDirectory {self.root / 'db'}",
            f"TCPSocket {self.port}",
            "TCPAddr 127.0.0.1",
            "Foreground yes",
            f"TemporaryDirectory {self.root / 'tmp'}",
            f"StreamMaxLength {self.stream_max_bytes}",
            "AlertEncrypted yes",
            "",
        ]))
        log = open(self.root / "clamd.log", "wb")  # noqa: SIM115 - handed to the child, closed in stop()
        self._log: BinaryIO | None = log
        self.process = subprocess.Popen([binary, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        client = Clamd(self.address, timeout=2.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"clamd exited with {self.process.returncode} at startup: "
                                   f"{(self.root / 'clamd.log').read_text(errors='replace')[-2000:]}")
            if client.ping():
                return self
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"clamd did not answer PING within {timeout}s; see {self.root / 'clamd.log'}")

    def stop(self) -> None:
        stop_process(self.process)
        log: BinaryIO | None = getattr(self, "_log", None)
        if log is not None:
            log.close()
            self._log = None
