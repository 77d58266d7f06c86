"""compose.yaml's invariants (check-jsonschema in `make lint` checks its shape)."""

from __future__ import annotations

import re

from tests.scaleout.compose import COMPOSE, ROOT, services

SECRETS = ("POSTGRES_PASSWORD", "OPENAI_API_KEY", "AZURE_OPENAI_API_KEY")


def test_services_and_their_commands() -> None:
    svc = services()
    assert {"postgres", "mlflow", "worker", "scheduler"} <= set(svc)
    assert svc["worker"]["command"][:2] == ["ftsweep", "run"]
    assert svc["scheduler"]["command"][:2] == ["ftsweep", "schedule"]
    assert "--serve" in svc["scheduler"]["command"]
    assert "deploy" not in svc["worker"]  # scaled with `--scale worker=N`
    assert (ROOT / "Dockerfile").is_file()
    assert "postgres" in (ROOT / "Dockerfile").read_text()


def test_images_are_pinned_and_dependencies_healthy() -> None:
    svc = services()
    assert svc["postgres"]["image"] == "postgres:17"  # 18 moved PGDATA
    assert "pgdata:/var/lib/postgresql/data" in svc["postgres"]["volumes"]
    assert re.fullmatch(r"ghcr\.io/mlflow/mlflow:v\d+\.\d+\.\d+-full", svc["mlflow"]["image"])
    built = {s["image"] for s in svc.values() if "build" in s}  # made here, never pulled
    assert {"ftsweep:latest", "ftsweep-ray:latest"} <= built
    for name, s in svc.items():
        if "build" not in s and s["image"] not in built:
            assert not s["image"].endswith(":latest"), name
        for target in s.get("depends_on", {}):
            assert "healthcheck" in svc[target], f"{name} waits for {target}"
            assert s["depends_on"][target]["condition"] == "service_healthy"


def test_mlflow_answers_other_machines() -> None:
    command = services()["mlflow"]["command"]
    allowed = [a for a in command if a.startswith("--allowed-hosts=")]
    assert len(allowed) == 1 and "mlflow:5000" in allowed[0]
    assert "--serve-artifacts" in command


def test_secrets_come_from_the_environment_only() -> None:
    text = COMPOSE.read_text()
    for name in SECRETS:
        for m in re.finditer(rf"^\s*{name}:[ ]*(\S*)", text, re.MULTILINE):
            value = m.group(1)
            assert value == "" or value.startswith("${"), f"{name}: {value}"
    assert "${POSTGRES_PASSWORD:?" in text
    for url in re.findall(r"postgresql://\S+", text):
        assert ":${POSTGRES_PASSWORD" in url, url
    docs = (ROOT / "docs" / "scaling.md").read_text()
    for var in set(re.findall(r"\$\{(\w+):\?", text)):
        assert var in docs, f"{var} is required by compose.yaml but not in docs/scaling.md"
