"""docker/Jenkinsfile: the staging pipeline's steps, in order, against the files they deploy.

Jenkins cannot run here; the pipeline is read as text and held to the issue's order
(checkout → test → rsync → build on the server → migrate → up → smoke check) and to the
repository: the compose file it drives, the env file it writes, the URL it checks.
"""

from __future__ import annotations

import re

from deploy_support import COMPOSE_FILE, DOCKER, ROOT, compose, migrate_service_name, staging_ini

JENKINSFILE = (DOCKER / "Jenkinsfile").read_text()


def environment_value(name: str) -> str:
    match = re.search(rf"^\s*{name}\s*=\s*'([^']*)'", JENKINSFILE, re.MULTILINE)
    assert match, f"the Jenkinsfile's environment block sets no {name}"
    return match.group(1)


def stage_body(name: str) -> str:
    start = JENKINSFILE.index(f"stage('{name}')")
    following = JENKINSFILE.find("stage('", start + 1)
    return JENKINSFILE[start:following if following > 0 else len(JENKINSFILE)]


def test_the_stages_run_in_the_order_of_the_staging_pipeline():
    stages = re.findall(r"stage\('([^']+)'\)", JENKINSFILE)
    assert stages == ["Checkout", "Test", "Deploy", "Rsync", "Build", "Migrate", "Up", "Smoke check"]


def test_the_tests_run_exactly_as_ci_and_the_readme_say():
    assert "sh 'make test'" in stage_body("Test")


def test_only_the_staging_branch_deploys():
    assert "when { branch 'staging' }" in stage_body("Deploy")


def test_the_pipeline_drives_the_staging_compose_file_in_the_deploy_directory():
    assert environment_value("APP_DIR") == "/srv/apps/kloyst-core"
    compose_command = environment_value("COMPOSE")
    assert compose_command == f"docker compose -f {COMPOSE_FILE.relative_to(ROOT)}"
    assert f"$COMPOSE run --rm {migrate_service_name()}" in stage_body("Migrate")
    assert "$COMPOSE up -d" in stage_body("Up")
    assert "$COMPOSE build" in stage_body("Build")


def test_the_secret_file_is_written_where_compose_reads_it_and_rsync_leaves_it_alone():
    env_file = f"$APP_DIR/{COMPOSE_FILE.parent.relative_to(ROOT)}/{compose()['services']['api-gateway']['env_file']}"
    rsync = stage_body("Rsync")
    assert "credentialsId: 'kloyst-staging-env'" in rsync
    assert f'cat > {env_file}"' in rsync and "umask 077" in rsync
    assert "--delete" in rsync and "--exclude=docker/staging.env" in rsync  # --delete would remove it otherwise


def test_the_smoke_check_asks_the_public_url_for_health_and_readiness_and_needs_200():
    assert environment_value("PUBLIC_URL") == staging_ini()["app:main"]["kloyst.http.public_url"]
    smoke = stage_body("Smoke check")
    assert "for path in /healthz /readyz" in smoke
    assert '[ "$status" = 200 ] || exit 1' in smoke
