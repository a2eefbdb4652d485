"""Static promises of the compose files, checked without an engine (tests/engine/test_compose.py runs them).

Safe defaults that a later edit could silently undo: ports on 127.0.0.1, capabilities dropped, no new
privileges; and documentation drift: every variable the files read is explained in .env.example.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from images.matrix import load_matrix

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILES = ("compose.yaml", "compose.override.yaml", "compose.cpu.yaml")
VARIABLE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)")


def services() -> dict[str, dict]:
    return yaml.safe_load((REPO / "compose.yaml").read_text())["services"]


def test_every_port_is_published_on_localhost_only() -> None:
    for name, service in services().items():
        for port in service.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_every_service_drops_capabilities_and_new_privileges() -> None:
    for name, service in services().items():
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        assert service["user"] == "0:0", f"{name}: the entrypoint needs root to take HOST_UID/HOST_GID"


def test_default_image_is_a_line_of_the_matrix() -> None:
    image = services()["jupyter"]["image"]
    default = re.fullmatch(r"\$\{PYTORCH_CUDA_IMAGE:-pytorch-cuda:(?P<tag>[^}]+)\}", image)
    assert default, f"unexpected image reference {image!r}"
    assert load_matrix().get(default["tag"]).tag == default["tag"]


def test_env_example_documents_every_variable() -> None:
    used = {var for name in COMPOSE_FILES for var in VARIABLE.findall((REPO / name).read_text())}
    documented = {
        line.lstrip("# ").split("=", 1)[0]
        for line in (REPO / ".env.example").read_text().splitlines()
        if re.match(r"#? ?[A-Z_]+=", line)
    }
    assert used, "no ${VARIABLE} found: the pattern no longer matches the files"
    assert used - documented == set(), "add these to .env.example"


def test_only_the_override_reserves_gpus() -> None:
    """`docker compose -f compose.yaml -f compose.cpu.yaml` must not see a reservation it cannot delete."""
    for name in ("compose.yaml", "compose.cpu.yaml"):
        assert "driver: nvidia" not in (REPO / name).read_text(), name
    override = yaml.safe_load((REPO / "compose.override.yaml").read_text())["services"]
    assert set(override) == {"jupyter", "ssh"}
