"""The environment the staging containers get is the one Kloyst reads, and the env example documents all of it.

"Kloyst reads" means: the environment variable of every setting the image's Kloyst declares
(core and shipped plugins) and every ``${NAME}`` staging.ini refers to. A misspelt variable in
the compose file or in staging.env is otherwise silently ignored; a variable staging.ini needs
and nobody sets stops every container.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from deploy_support import (ENV_EXAMPLE, ROOT, STAGING_INI, app_services, compose, env_example, environment,
                            image_settings, kloyst_services, migrate_service_name, staging_ini_references,
                            variables_kloyst_reads)

from kloyst.config import ConfigurationError, resolve
from kloyst.crypto import MobileHasher

KLOYST = str(Path(sys.executable).with_name("kloyst"))


def postgres_image_variables() -> set[str]:
    """What the postgres service may read from the shared env file: the official image's POSTGRES_* only."""
    return {key for key in env_example().values if key.startswith("POSTGRES_")}


def test_every_variable_the_compose_file_sets_for_kloyst_is_one_kloyst_reads():
    known = variables_kloyst_reads()
    for name, service in kloyst_services().items():
        unknown = set(environment(service)) - known
        assert not unknown, f"{name} sets {sorted(unknown)}, which Kloyst never reads"


def test_every_variable_in_the_env_example_is_one_kloyst_or_the_postgres_image_reads():
    example = env_example()
    known = variables_kloyst_reads() | postgres_image_variables()
    unknown = (set(example.values) | set(example.commented)) - known
    assert not unknown, f"{ENV_EXAMPLE.name} lists {sorted(unknown)}, which nothing reads"
    postgres = compose()["services"]["postgres"]
    assert postgres.get("env_file") == "staging.env"  # where POSTGRES_PASSWORD comes from


def test_every_variable_staging_ini_requires_reaches_every_kloyst_container():
    required = staging_ini_references()
    assert required, f"{STAGING_INI.name} refers to no ${{NAME}}: the parser or the file changed"
    provided_by_file = set(env_example().values)
    for name, service in kloyst_services().items():
        assert service.get("env_file") == "staging.env", name
        missing = required - provided_by_file - set(environment(service))
        if name == migrate_service_name():
            missing -= {"SERVICE_TYPE"}  # `kloyst db upgrade` runs no service and does not read it
        assert not missing, f"{name} would stop at start-up: {sorted(missing)} set neither in staging.env nor below"


def test_service_type_is_set_per_service_and_never_in_the_shared_env_file():
    assert "SERVICE_TYPE" not in env_example().values  # one file for every service: it cannot pick a mode
    for name, service in app_services().items():
        assert environment(service).get("SERVICE_TYPE"), name
    # The migration runs no service: it needs no mode, and giving it one would only mislabel its log lines.
    assert "SERVICE_TYPE" not in environment(compose()["services"][migrate_service_name()])


def test_the_env_example_commits_no_value():
    filled = {key: value for key, value in env_example().values.items() if value.strip()}
    assert filled == {}, f"{ENV_EXAMPLE.name} must not carry values (secrets live only in docker/staging.env)"


def test_every_secret_setting_staging_reads_is_documented_in_the_env_example():
    secrets = {setting.env for setting in image_settings() if setting.secret}
    from_env = staging_ini_references()
    missing = (secrets & from_env) - set(env_example().values)
    assert not missing, missing


def test_the_staging_env_file_is_ignored_by_git_and_docker():
    assert "docker/staging.env" in (ROOT / ".gitignore").read_text().splitlines()
    dockerignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()]
    assert "docker/staging.env" in dockerignore


@pytest.mark.parametrize("key", sorted(env_example().generators))
def test_each_generate_command_in_the_env_example_makes_a_value_kloyst_accepts(key):
    command = shlex.split(env_example().generators[key])
    assert command[:2] == ["python3", "-c"]
    produced = subprocess.run([sys.executable, *command[1:]], capture_output=True, text=True, check=True)
    value = produced.stdout.strip()
    assert value and "\n" not in value
    settings = [setting for setting in image_settings() if setting.env == key]
    for setting in settings:  # POSTGRES_PASSWORD is the postgres image's, not a Kloyst setting
        try:
            resolve({}, (setting,), {key: value})
        except ConfigurationError as exc:
            pytest.fail(f"{key} made by its command is refused: {exc}")
    if key == "DATA_HASH_KEY":
        MobileHasher(value)  # its length rule lives where it is used
    if ":" not in value:  # not a keyring: a password or token that may sit inside a URL as it is
        assert urllib.parse.quote(value, safe="") == value, f"{key}'s generated value needs URL escaping"


def test_every_command_the_env_example_gives_runs():
    commands = env_example().commands
    assert len(commands) > len(env_example().generators)  # the Redis password is made but not a value itself
    for command in commands:
        subprocess.run([sys.executable, *shlex.split(command)[1:]], capture_output=True, check=True)


def test_a_copy_of_the_env_example_left_unfilled_stops_kloyst_naming_each_required_variable(tmp_path):
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", **env_example().values, "SERVICE_TYPE": "API_GATEWAY",
           "LOG_DIR": str(tmp_path / "log")}
    result = subprocess.run([KLOYST, "db", "current", str(STAGING_INI)], env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    required = {setting.env for setting in image_settings() if setting.required and setting.default is None}
    for name in sorted(required & set(env_example().values)):
        assert name in result.stderr, name
    assert "Traceback" not in result.stderr
