"""What the deployment tests read: the compose file, the Dockerfile, the env example, and what Kloyst reads.

Kloyst's own image is built and run by a real Docker engine (test_docker_image.py), but no
registry is reachable where the tests run, so the compose file's other images cannot be pulled
and the deployment files are also checked against each
other and against the application itself: the settings it declares, the ``${NAME}``
references of staging.ini and the migrations it applies. Only the ``kloyst`` distribution
counts as "the application" here, because it is the only one the image installs.
"""

from __future__ import annotations

import configparser
import re
import shlex
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.staging.yml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = DOCKER / "staging.env.example"
STAGING_INI = ROOT / "staging.ini"
IMAGE_DISTRIBUTION = "kloyst"

ENV_REFERENCE = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
ASSIGNMENT = re.compile(r"^(#\s*)?([A-Z][A-Z0-9_]*)=(.*)$")


@cache
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def builds_kloyst(service: dict) -> bool:
    build = service.get("build")
    return isinstance(build, dict) and (COMPOSE_FILE.parent / build.get("context", ".") /
                                        build.get("dockerfile", "Dockerfile")).resolve() == DOCKERFILE


def kloyst_services() -> dict[str, dict]:
    """Every service that runs the Kloyst image, the one-shot migration included."""
    return {name: service for name, service in compose()["services"].items() if builds_kloyst(service)}


def migrate_service_name() -> str:
    names = [name for name, service in kloyst_services().items() if service.get("command") == ["migrate"]]
    assert len(names) == 1, f"expected one Kloyst service running `migrate`, found {names}"
    return names[0]


def app_services() -> dict[str, dict]:
    """The long-running Kloyst services (every Kloyst service but the migration)."""
    migrate = migrate_service_name()
    return {name: service for name, service in kloyst_services().items() if name != migrate}


def environment(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {key: str(value) for key, value in env.items()}


def image_settings():
    """Every setting the image's Kloyst declares: the core's and those of the plugins it ships."""
    from kloyst.config import CORE_SETTINGS
    from kloyst.plugins import build_plugin_manager

    pm = build_plugin_manager()
    shipped = {name for name, info in pm.infos.items() if info.distribution == IMAGE_DISTRIBUTION}
    return list(CORE_SETTINGS) + [setting for plugin, setting in pm.collect("kloyst_settings") if plugin in shipped]


def staging_ini() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(STAGING_INI)
    return parser


def staging_ini_references() -> set[str]:
    """The variables staging.ini's settings are written as (``${NAME}``): each must be in the environment."""
    return {name for value in staging_ini()["app:main"].values() for name in ENV_REFERENCE.findall(value)}


def variables_kloyst_reads() -> set[str]:
    return {setting.env for setting in image_settings()} | staging_ini_references()


@dataclass
class EnvExample:
    values: dict[str, str]  # KEY=value lines
    commented: list[str]  # "# KEY=value" lines: suggestions an operator may uncomment
    generators: dict[str, str]  # KEY -> the "# generate: …" command written above it
    commands: list[str]  # every "python3 -c …" command the file tells an operator to run


@cache
def env_example() -> EnvExample:
    example = EnvExample({}, [], {}, [])
    pending = None
    for line in ENV_EXAMPLE.read_text().splitlines():
        text = line.strip()
        if match := re.match(r"^#\s*(generate:)?\s*(python3 -c .*)$", text):
            example.commands.append(match.group(2))
            if match.group(1):
                pending = match.group(2)
            continue
        if match := ASSIGNMENT.match(text):
            commented, key, value = match.groups()
            if commented:
                example.commented.append(key)
                continue
            example.values[key] = value
            if pending:
                example.generators[key] = pending
        if not text.startswith("#"):
            pending = None
    return example


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[tuple[str, str]] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)  # ARG defaults declared in this stage

    def all(self, keyword: str) -> list[str]:
        return [args for key, args in self.instructions if key == keyword]

    def expand(self, text: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: self.args.get(m.group(1), m.group(0)), text)


def _logical_lines(text: str) -> list[str]:
    lines, current = [], ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if current and stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    return lines


@cache
def dockerfile_stages() -> list[Stage]:
    """The Dockerfile's stages in order, each with its instructions (``(KEYWORD, arguments)``)."""
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in _logical_lines(DOCKERFILE.read_text()):
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) >= 3 and parts[1].upper() == "AS" else None
            base = re.sub(r"\$\{?(\w+)\}?", lambda m: global_args.get(m.group(1), m.group(0)), parts[0])
            stages.append(Stage(name, base))
            continue
        if keyword == "ARG":
            name, _, default = rest.partition("=")
            (stages[-1].args if stages else global_args)[name] = default.strip('"')
        if stages:
            stages[-1].instructions.append((keyword, rest))
    return stages


def instruction_names(args: str) -> list[str]:
    """The variable names an ENV or ARG instruction declares (``A=1 B=2``, ``A 1`` or ``A``)."""
    words = shlex.split(args)
    if words and "=" not in words[0]:
        return [words[0]]
    return [word.split("=", 1)[0] for word in words]
