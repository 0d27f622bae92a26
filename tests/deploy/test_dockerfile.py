"""docker/Dockerfile: the runtime stage is non-root, checks its health, bakes in no secret, and carries the migrations.

The image cannot be built here; the Dockerfile is read instruction by instruction instead.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from pathlib import Path

from deploy_support import DOCKER, IMAGE_DISTRIBUTION, ROOT, dockerfile_stages, image_settings, instruction_names

# Names that say "secret" in any spelling, beside the settings Kloyst itself marks secret.
SECRET_NAME = re.compile(r"SECRET|PASSWORD|PASSWD|TOKEN|CREDENTIAL|PRIVATE|(^|_)KEYS?($|_)|_URL$")


def runtime():
    return dockerfile_stages()[-1]


def dockerignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def _matches(pattern: str, path: str) -> bool:
    if pattern.startswith("**/"):  # Docker's "**" matches any number of directories, none included
        parts = path.split("/")
        return any(_matches(pattern[3:], "/".join(parts[i:])) for i in range(len(parts)))
    return fnmatch.fnmatchcase(path, pattern)


def ignored_by_docker(path: str) -> bool:
    """Whether ``path`` (relative to the build context) or a parent of it is excluded by .dockerignore."""
    parts = Path(path).parts
    candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return any(_matches(pattern, candidate) for pattern in dockerignore_patterns() for candidate in candidates)


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form instruction (``CMD [...]`` inside HEALTHCHECK, ENTRYPOINT)."""
    return json.loads(args[args.index("["):])


def test_the_final_stage_is_the_runtime_target_on_python_3_11_slim_bookworm():
    assert runtime().name == "runtime"
    assert runtime().base == "python:3.11-slim-bookworm"
    assert len(dockerfile_stages()) >= 2, "build tools and wheels stay in a build stage"


def test_the_runtime_stage_runs_as_a_non_root_user():
    users = runtime().all("USER")
    assert users, "the runtime stage sets no USER: it would run as root"
    user = runtime().expand(users[-1]).split(":")[0]
    assert user not in ("root", "0", ""), user


def test_the_runtime_stage_has_a_health_check_running_the_mode_aware_script():
    checks = runtime().all("HEALTHCHECK")
    assert checks and "NONE" not in checks[-1].upper()
    command = exec_form(checks[-1])
    assert command[-1] == "/app/docker/healthcheck.py"


def test_the_entrypoint_is_the_mode_script_and_runs_the_service_by_default():
    assert exec_form(runtime().all("ENTRYPOINT")[-1]) == ["/app/docker/entrypoint.sh"]
    assert exec_form(runtime().all("CMD")[-1]) == ["run"]
    assert os.access(DOCKER / "entrypoint.sh", os.X_OK), "docker/entrypoint.sh must be executable"


def test_no_stage_declares_a_secret_as_env_or_arg():
    secret_settings = {setting.env for setting in image_settings() if setting.secret}
    for stage in dockerfile_stages():
        for keyword in ("ENV", "ARG"):
            for args in stage.all(keyword):
                for name in instruction_names(args):
                    assert name not in secret_settings and not SECRET_NAME.search(name), (
                        f"{keyword} {name} in stage {stage.name}: secrets come from the environment at run time")


def test_no_stage_copies_an_env_file_and_docker_never_sees_the_staging_one():
    for stage in dockerfile_stages():
        for keyword in ("COPY", "ADD"):
            for args in stage.all(keyword):
                sources = [word for word in args.split()[:-1] if not word.startswith("--")]
                assert not any(source.endswith(".env") for source in sources), f"{keyword} {args}"
    assert ignored_by_docker("docker/staging.env")
    assert ignored_by_docker(".env") and ignored_by_docker(".git") and ignored_by_docker(".venv")


def _build_stage_steps() -> list[tuple[str, str]]:
    """Every instruction of the stages before the runtime one, in order."""
    return [step for stage in dockerfile_stages()[:-1] for step in stage.instructions]


def _copied_sources(steps) -> list[str]:
    sources = []
    for keyword, args in steps:
        if keyword == "COPY" and not any(word.startswith("--from") for word in args.split()):
            sources += [word.rstrip("/") for word in args.split()[:-1] if not word.startswith("--")]
    return sources


def test_kloyst_is_installed_from_its_wheel_not_editable():
    steps = _build_stage_steps()
    runs = [(index, args) for index, (keyword, args) in enumerate(steps) if keyword == "RUN"]
    assert not any(re.search(r"pip install\b[^&]*(--editable|\s-e\s)", args) for _, args in runs), (
        "Kloyst is installed editable: install the wheel it builds instead")
    installs = [(index, args) for index, args in runs if re.search(r"pip wheel\b[^&]*--no-deps", args)
                and re.search(r"pip install\b[^&]*kloyst-\*\.whl", args)]
    assert installs, "no RUN builds Kloyst's wheel (pip wheel --no-deps) and installs it (pip install kloyst-*.whl)"
    index = installs[-1][0]
    # Everything the wheel is built from is in the build context and copied before the wheel is built.
    copied = _copied_sources(steps[:index])
    for needed in ("setup.py", "pyproject.toml", "README.md", "kloyst", "kloyst_plugins", "migrations"):
        assert needed in copied, f"{needed} is not copied before the wheel is built"
        assert not ignored_by_docker(needed), f".dockerignore excludes {needed}"


def test_the_image_gets_no_source_tree_that_could_shadow_the_installed_wheel():
    """The runtime stage takes the build stage's /app: the sources must have been copied elsewhere."""
    assert any(" ".join(args.split()) == "--from=build /app /app" for args in runtime().all("COPY"))
    workdir = "/"
    for keyword, args in _build_stage_steps():
        workdir = args if keyword == "WORKDIR" else workdir
        if keyword == "COPY" and workdir == "/app":
            sources = set(_copied_sources([(keyword, args)]))
            assert not sources & {"kloyst", "kloyst_plugins", "migrations"}, f"COPY {args} into /app"


def test_every_migration_kloyst_applies_is_in_the_source_the_wheel_is_built_from():
    from kloyst.db import migrate
    from kloyst.plugins import build_plugin_manager

    pm = build_plugin_manager()
    shipped = {name for name, info in pm.infos.items() if info.distribution == IMAGE_DISTRIBUTION}
    directories = [directory.relative_to(ROOT) for plugin, directory in migrate.migration_dirs(pm)
                   if plugin in shipped]
    assert directories
    directories.append(migrate.MIGRATIONS.relative_to(ROOT))  # the core's: the wheel's kloyst/migrations
    copied = [Path(source) for source in _copied_sources(_build_stage_steps())]
    for directory in directories:
        assert not ignored_by_docker(str(directory)), f".dockerignore excludes {directory}"
        assert any(directory.parts[:len(source.parts)] == source.parts for source in copied), (
            f"{directory} is not copied into the build stage, so the wheel would leave it out")
