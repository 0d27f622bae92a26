"""The shipped nginx config (nginx/) passes ``nginx -t`` inside Debian's nginx.conf and agrees with the rest.

``nginx -t`` runs the files as shipped, with only the paths kloyst.testing.nginx lists moved into a
temporary directory. The other tests compare the site file with what the application, staging.ini and
the compose files say, so a body limit or a port changed on one side only fails here rather than on
staging. tests/e2e/test_nginx_proxy.py runs the same config in front of a real Kloyst.
"""

from __future__ import annotations

import configparser

import pytest
import yaml
from deploy_support import ROOT, compose

from kloyst.http.tweens import body_limit_for
from kloyst.runner import WEBHOOK_PREFIX
from kloyst.testing.nginx import SITE, Directive, parse, render, server, size_bytes

SOURCE = ROOT / "nginx"
API_HOST = "api.staging.kloyst.com"
MONITORING_COMPOSE = ROOT / "monitoring" / "docker-compose.monitoring.yml"


@pytest.fixture(scope="module")
def api() -> Directive:
    return server(parse((SOURCE / SITE).read_text()), API_HOST)


def staging_setting(key: str) -> str:
    ini = configparser.ConfigParser(interpolation=None)
    ini.read(ROOT / "staging.ini")
    return ini["app:main"][key]


def nginx_body_limit(api: Directive, path: str) -> int:
    """The client_max_body_size nginx applies to ``path``: the exact location, else the longest prefix one."""
    locations = [block for block in api.children("location") if not block.args[0].startswith("@")]
    # The site has no regex locations; with one, this lookup would no longer be nginx's.
    assert not [block for block in locations if block.args[0] in ("~", "~*")]
    exact = [block for block in locations if block.args[0] == "=" and block.args[1] == path]
    prefixes = [block for block in locations if block.args[0] != "=" and path.startswith(block.args[-1])]
    location = exact[0] if exact else max(prefixes, key=lambda block: len(block.args[-1]))
    sizes = location.children("client_max_body_size") or api.children("client_max_body_size")
    return size_bytes(sizes[0].args[0])


def test_nginx_accepts_the_shipped_config_without_warnings(tmp_path):
    try:
        prefix = render(SOURCE, tmp_path / "nginx", users={"ops": "test-password"})
    except RuntimeError as exc:  # nginx missing: a failure that says how to install it, never a skip
        pytest.fail(str(exc))
    result = prefix.check()
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr
    assert "[warn]" not in result.stderr, result.stderr


def test_upload_limit_in_nginx_is_exactly_kloysts_for_the_upload_route(api, registry):
    upload_path = f"{registry.settings['kloyst.api.prefix']}/imports"
    assert nginx_body_limit(api, upload_path) == body_limit_for(registry, upload_path)


def test_every_body_kloyst_accepts_fits_through_nginx(api, registry):
    prefix = registry.settings["kloyst.api.prefix"]
    declared = [(path, limit) for path, limit, _exact in registry["kloyst.body_limits"]]
    for path, limit in [(f"{prefix}/auth/login", registry.settings["kloyst.http.max_body_bytes"]), *declared]:
        assert nginx_body_limit(api, path) >= limit, f"nginx refuses bodies on {path} that Kloyst accepts"


def test_api_and_webhook_paths_go_to_their_own_processes(api):
    def upstream(*location: str) -> str:
        return api.child("location", *location).value("proxy_pass")

    assert upstream(staging_setting("kloyst.api.prefix").rstrip("/") + "/") == "http://kloyst_api"
    assert upstream(WEBHOOK_PREFIX) == "http://kloyst_webhook"
    assert upstream("=", "/healthz") == upstream("=", "/readyz") == "http://kloyst_api"


def test_every_upstream_is_a_port_its_compose_service_publishes_on_loopback():
    monitoring = yaml.safe_load(MONITORING_COMPOSE.read_text())
    services = {"kloyst_api": compose()["services"]["api-gateway"],
                "kloyst_webhook": compose()["services"]["webhook"],
                "kloyst_grafana": monitoring["services"]["grafana"],
                "kloyst_dozzle": monitoring["services"]["dozzle"]}
    upstreams = {block.args[0]: block.value("server") for block in parse((SOURCE / SITE).read_text())
                 .children("upstream")}
    assert set(upstreams) == set(services)
    for name, address in upstreams.items():
        published = {port.rsplit(":", 1)[0] for port in services[name].get("ports", [])}
        assert address in published, f"upstream {name} is {address}; its service publishes {published}"
