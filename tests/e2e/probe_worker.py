"""A WORKER process with the test-only probe plugin: ``python probe_worker.py`` with settings as JSON.

The real ``kloyst run`` loads plugins from entry points only; the probe plugin is not
installed, so this launcher builds the same application with it and runs the same
service mode.
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import probe_plugin  # noqa: E402

from kloyst import make_configurator, runner  # noqa: E402

if __name__ == "__main__":
    settings = json.loads(os.environ["KLOYST_TEST_SETTINGS"])
    config = make_configurator({"here": os.getcwd()}, settings, extra_plugins=[("probe", probe_plugin)], environ={})
    sys.exit(runner.run(os.environ.get("SERVICE_TYPE", "WORKER"), config.make_wsgi_app(), config.registry))
