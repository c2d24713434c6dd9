"""docker-compose.yml and the Dockerfile (validated without a container engine)."""

from __future__ import annotations

import re

from tests.conftest import need_program
from tests.dashboards.helpers import load_yaml, run
from tests.support import REPO

SERVICES = {"postgres", "redis", "migrate", "api", "worker", "beat", "prometheus",
            "alertmanager", "grafana"}


def compose() -> dict:
    return load_yaml(REPO / "docker-compose.yml")


def test_docker_compose_config_is_valid():
    exe = need_program("docker-compose")
    result = run([exe, "-f", str(REPO / "docker-compose.yml"), "config", "-q"])
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_service_is_there_with_a_healthcheck():
    services = compose()["services"]
    assert set(services) == SERVICES
    for name, svc in services.items():
        if name != "migrate":  # one-shot: its exit code is its health
            assert "healthcheck" in svc, name
    assert services["migrate"]["restart"] == "no"


def test_startup_order_uses_conditions():
    services = compose()["services"]
    for name in ("api", "worker", "beat"):
        deps = services[name]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully", name
        assert deps["redis"]["condition"] == "service_healthy", name
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["prometheus"]["depends_on"]["api"]["condition"] == "service_healthy"
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"


def test_app_services_share_one_image_and_the_production_backends():
    services = compose()["services"]
    for name in ("migrate", "api", "worker", "beat"):
        svc = services[name]
        assert svc["image"] == "collapsewatch:latest" and svc["build"]["context"] == "."
        env = svc["environment"]
        assert env["COLLAPSEWATCH_DATABASE_URL"].startswith("postgresql+psycopg://")
        assert env["COLLAPSEWATCH_BROKER_URL"].startswith("redis://redis:6379")
    assert services["api"]["command"][0] == "api"
    assert services["worker"]["command"][0] == "worker"
    assert services["beat"]["command"][0] == "beat"
    assert services["migrate"]["command"] == ["migrate"]


def test_mounted_files_exist_and_data_lives_in_volumes():
    c = compose()
    for name, svc in c["services"].items():
        for mount in svc.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (REPO / source).exists(), (name, source)
            else:
                assert source in c["volumes"], (name, source)
    prometheus = " ".join(c["services"]["prometheus"]["command"])
    assert "--web.external-url=" in prometheus
    alertmanager = load_yaml(REPO / "dashboards" / "alertmanager" / "alertmanager.yml")
    files = {cfg.get("routing_key_file") or cfg.get("api_url_file")
             for r in alertmanager["receivers"]
             for cfg in r.get("pagerduty_configs", []) + r.get("slack_configs", [])}
    assert files == {f"/run/secrets/{s}" for s in c["services"]["alertmanager"]["secrets"]}


def test_dockerfile_copies_every_package_and_runs_the_cli():
    text = (REPO / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \./\S*$", text, flags=re.MULTILINE))
    pyproject = (REPO / "pyproject.toml").read_text()
    find = pyproject.split("[tool.setuptools.packages.find]")[1]
    packages = re.search(r"include = \[([^\]]*)\]", find)
    names = {p.strip().strip('"').rstrip("*") for p in packages.group(1).split(",")}
    assert names <= copied, names - copied
    for source in copied:
        assert (REPO / source).exists(), source
    assert 'ENTRYPOINT ["collapsewatch"]' in text
    assert re.search(r"^USER (?!root)\S+", text, flags=re.MULTILINE)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored and not names & set(ignored)
