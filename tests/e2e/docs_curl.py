"""``curl`` as the executed-docs test puts it on a block's PATH: the real curl, aimed at the test's ports, logged.

The docs say ``http://127.0.0.1:6543`` (and the sandbox's 6590); ``DOCS_PORTS`` maps each to the
port this test's server listens on. Each call appends one JSON line to ``DOCS_CURL_LOG``: the
block it came from, the method and URL curl used, the final status, the content type and the
body (unless the doc wrote it to a file with ``-o``). curl's own output and exit status pass
through unchanged, so the block behaves as it would in the reader's terminal.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

MARK = "DOCS-CALL "


def main(args: list[str]) -> int:
    for said, port in json.loads(os.environ["DOCS_PORTS"]).items():
        args = [arg.replace(f"127.0.0.1:{said}", f"127.0.0.1:{port}").replace(f"localhost:{said}", f"127.0.0.1:{port}")
                for arg in args]
    with tempfile.NamedTemporaryFile("r", suffix=".headers", errors="replace") as headers:
        done = subprocess.run([os.environ["DOCS_REAL_CURL"], "-D", headers.name,
                               "-w", f"%{{stderr}}\n{MARK}%{{method}} %{{url_effective}}\n", *args],
                              capture_output=True)
        header_lines = headers.read().splitlines()
    sys.stdout.buffer.write(done.stdout)
    sys.stdout.flush()
    errors = done.stderr.decode(errors="replace").splitlines()
    calls = [line[len(MARK):] for line in errors if line.startswith(MARK)]
    sys.stderr.write("".join(f"{line}\n" for line in errors if line and not line.startswith(MARK)))
    statuses = [line.split()[1] for line in header_lines if line.startswith("HTTP/") and len(line.split()) > 1]
    types = [line.split(":", 1)[1].strip() for line in header_lines if line.lower().startswith("content-type:")]
    to_file = any(arg in ("-o", "--output", "-O", "--remote-name") for arg in args)
    with open(os.environ["DOCS_CURL_LOG"], "a", encoding="utf-8") as log:
        log.write(json.dumps({"block": os.environ.get("DOCS_BLOCK", ""), "argv": args, "exit": done.returncode,
                              "call": calls[-1] if calls else " ".join(args),
                              "status": int(statuses[-1]) if statuses else None,
                              "content_type": types[-1] if types else None,
                              "body": None if to_file else done.stdout.decode(errors="replace")}) + "\n")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
