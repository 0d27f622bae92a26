"""Both compose files pass ``docker-compose config`` (Debian's docker-compose 1.29, which ``make test`` installs).

``config`` parses, validates and interpolates a compose file as ``up`` would, without a Docker engine.
Run on a copy of the file's directory with the example env file in place of the secrets (never committed).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
STACKS = {  # directory → (compose file, env file the compose file reads, its committed example)
    "docker": ("docker-compose.staging.yml", "staging.env", "staging.env.example"),
    "monitoring": ("docker-compose.monitoring.yml", "monitoring.env", "monitoring.env.example"),
}


@pytest.mark.parametrize("directory", sorted(STACKS))
def test_docker_compose_config_accepts_the_stack_under_its_project_name(directory, tmp_path):
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose is not installed: `make test` installs Debian's docker-compose package")
    compose_file, env_file, example = STACKS[directory]
    copy = tmp_path / directory
    shutil.copytree(ROOT / directory, copy)
    shutil.copy(copy / example, copy / env_file)
    result = subprocess.run([binary, "-f", compose_file, "config"], cwd=copy, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["services"], result.stdout
    project = dict(line.split("=", 1) for line in (ROOT / directory / ".env").read_text().splitlines()
                   if line and not line.startswith("#"))["COMPOSE_PROJECT_NAME"]
    assert project == f"kloyst-{'staging' if directory == 'docker' else 'monitoring'}"
