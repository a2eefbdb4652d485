"""The image's entrypoint under plain `docker run`: the UID/GID remap, its refusals, and non-root starts.

Compose starts the services as root so the entrypoint can remap; these cases are the edges compose.yaml's
happy path does not reach (a bad HOST_UID, HOST_UID=0 from a root shell, `docker run` as the image's user).
"""

from __future__ import annotations

import subprocess
import uuid

import pytest


def docker_run(image: str, *command: str, user: str = "0:0", env: dict[str, str] | None = None):
    env_args = [arg for key, value in (env or {}).items() for arg in ("-e", f"{key}={value}")]
    return subprocess.run(
        ["docker", "run", "--rm", "--user", user, *env_args, image, *command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_root_start_remaps_the_user_and_drops_root(built_image: str) -> None:
    done = docker_run(
        built_image,
        "sh",
        "-c",
        "id -u; id -g; id -un; grep CapEff /proc/self/status",
        env={"HOST_UID": "4321", "HOST_GID": "4322"},
    )
    assert done.returncode == 0, done.stderr
    uid, gid, name, capabilities = done.stdout.splitlines()
    assert (uid, gid, name) == ("4321", "4322", "pytorch")
    assert capabilities.split() == ["CapEff:", "0000000000000000"]


@pytest.mark.parametrize("variable", ["HOST_UID", "HOST_GID"])
@pytest.mark.parametrize("value", ["abc", "-5", "99999999999"])
def test_bad_ids_are_refused_with_the_fix(built_image: str, variable: str, value: str) -> None:
    done = docker_run(built_image, "true", env={variable: value})
    assert done.returncode == 2
    assert f"{variable}='{value}'" in done.stderr
    assert "fix:" in done.stderr


def test_host_uid_zero_keeps_the_image_user(built_image: str) -> None:
    """`sudo make up` passes HOST_UID=0: the services must not become root."""
    done = docker_run(built_image, "id", "-u", env={"HOST_UID": "0", "HOST_GID": "0"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1000"
    assert "HOST_UID=0 (root)" in done.stderr


def test_non_root_start_execs_unchanged(built_image: str) -> None:
    done = docker_run(built_image, "id", "-u", user="1000:1000", env={"HOST_UID": "4321"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1000"
    assert done.stderr == ""


def test_chosen_jupyter_token_never_reaches_the_logs(built_image: str) -> None:
    secret = "chosen-token-0123456789abcdef"
    name = f"pctest-token-{uuid.uuid4().hex[:8]}"
    subprocess.run(
        [
            "docker",
            "run",
            "-d",
            "--name",
            name,
            "--user",
            "0:0",
            "-e",
            f"JUPYTER_TOKEN={secret}",
            built_image,
            "serve-jupyter",
        ],
        capture_output=True,
        check=True,
    )
    try:
        probe = "import time, urllib.request as u; time.sleep(1)\n" + (
            "for _ in range(120):\n"
            "    try: u.urlopen('http://127.0.0.1:8888/api', timeout=2); break\n"
            "    except OSError: time.sleep(1)\n"
        )
        subprocess.run(["docker", "exec", name, "python", "-c", probe], check=True, timeout=180)
        ready = subprocess.run(
            ["docker", "exec", name, "healthcheck", "jupyter"], capture_output=True, check=False
        )
        assert ready.returncode == 0
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=True)
        assert "token=<your JUPYTER_TOKEN>" in logs.stdout + logs.stderr
        assert secret not in logs.stdout + logs.stderr
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)
