"""Engine faults a user can cause give one paragraph with the cause and the fix, exit 1, no traceback.

The unreachable-engine faults are made for real without an engine: a DOCKER_HOST socket that does not
exist, a socket file nobody listens on (dockerd died), and a socket the user may not open (the kernel's
EACCES, as for a user outside the docker group). The refusal rules are checked on the words real engines
and registries answered (recorded here; tests/engine/test_error_paths.py makes each refusal for real).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from images.engine import DISK_FULL_FIX, EngineError, api_client, explain_refusal, refused

REPO = Path(__file__).resolve().parents[3]
COMMANDS = (
    ["build", "--tag", "v2.8"],
    ["push", "--tag", "v2.8", "--registry", "127.0.0.1:5000"],
    ["verify", "--tag", "v2.8", "--gpus", "none"],
)


def run_images(
    args: list[str], docker_host: str, prefix: list[str] | None = None
) -> subprocess.CompletedProcess:
    env = {**os.environ, "DOCKER_HOST": docker_host, "PYTHONPATH": str(REPO)}
    env.pop("DOCKER_TLS_VERIFY", None)
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "images", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def assert_one_paragraph(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    # build first says which host pip settings it took; the error is the one "error:" line, and the last
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and result.stderr.rstrip().endswith(errors[0]), result.stderr
    for needle in needles:
        assert needle in errors[0], result.stderr


@pytest.fixture
def stale_socket(tmp_path: Path) -> Path:
    """A socket file whose server is gone: what a crashed dockerd leaves behind (connect: ECONNREFUSED)."""
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()
    return path


@pytest.fixture
def closed_socket(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A listening socket this test's commands may not open, and the prefix that runs them unprivileged.

    As root the command runs without capabilities (setpriv) against a socket owned by nobody with mode
    600, so the kernel checks the mode bits as for any user outside the socket's group; as another user the
    socket is simply mode 000. Either way connect() fails with the kernel's EACCES, as on a host where the
    user is not in the docker group.
    """
    path = tmp_path / "docker.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root's capabilities"
        os.chown(path, 65534, 65534)
        path.chmod(0o600)
        prefix = [setpriv, "--inh-caps=-all", "--bounding-set=-all", "--"]
    else:
        path.chmod(0)
    yield path, prefix
    server.close()


def test_api_client_without_a_socket_names_the_address_and_how_to_start_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    address = f"unix://{tmp_path}/nothing.sock"
    monkeypatch.setenv("DOCKER_HOST", address)
    with pytest.raises(EngineError) as failure:
        api_client()
    message = str(failure.value)
    assert f"cannot reach the Docker engine at {address}: nothing listens there" in message
    assert "sudo systemctl start docker" in message and "DOCKER_HOST" in message


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_no_engine_each_command_exits_1_with_the_fix(args: list[str], tmp_path: Path) -> None:
    address = f"unix://{tmp_path}/nothing.sock"
    assert_one_paragraph(
        run_images(args, address), f"cannot reach the Docker engine at {address}", "systemctl start docker"
    )


def test_a_dead_engines_socket_file_is_not_running_either(stale_socket: Path) -> None:
    address = f"unix://{stale_socket}"
    assert_one_paragraph(
        run_images(list(COMMANDS[2]), address), "nothing listens there (Connection refused)", "systemctl"
    )


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: a[0])
def test_socket_permission_denied_names_the_docker_group_and_rootless(
    args: list[str], closed_socket: tuple[Path, list[str]]
) -> None:
    path, prefix = closed_socket
    assert_one_paragraph(
        run_images(args, f"unix://{path}", prefix),
        "permission denied",
        "sudo usermod -aG docker $USER",
        "rootless Docker",
    )


# Words real engines answered (docker 26 here, through docker-py), and what each must lead to.
RECORDED = {
    # Debian's docker-registry with `maintenance: readonly`, a push to it:
    "error parsing HTTP 405 response body: invalid character 'M' looking for beginning of value: \"Method "
    'not allowed\\n"': "does not accept pushes",
    # an HTTP server answering 401 with a Basic challenge (a registry with htpasswd auth answers so):
    "no basic auth credentials": "docker login 127.0.0.1:5000",
    # ... answering 403:
    'error parsing HTTP 403 response body: unexpected end of JSON input: ""': "write access",
    # ... answering 500; docker-registry whose storage is a full 256 KiB tmpfs answers the same after 50 s:
    "received unexpected HTTP status: 500 Internal Server Error": "failed on its side",
    # a registry address where nothing listens:
    'Get "http://127.0.0.1:38653/v2/": dial tcp 127.0.0.1:38653: connect: connection refused': "cannot reach",
    # a base image the builder tried to pull with no registry reachable:
    'Get "https://registry-1.docker.io/v2/": dial tcp: lookup registry-1.docker.io on 10.255.255.53:53: no '
    "such host": "HTTPS_PROXY",
    # the engine writing into a full filesystem (put_archive into a 64 KiB tmpfs volume):
    "Error processing tar file(exit status 1): write /mnt/full/big: no space left on device": DISK_FULL_FIX,
}


@pytest.mark.parametrize("words", list(RECORDED), ids=range(len(RECORDED)))
def test_each_recorded_refusal_gets_its_fix(words: str) -> None:
    fix = explain_refusal(words, "127.0.0.1:5000/pytorch-cuda")
    assert RECORDED[words] in fix and "fix:" in fix


def test_an_unknown_refusal_keeps_the_engines_words_and_claims_no_fix() -> None:
    assert explain_refusal("conflict: unable to delete 0123456789ab (must be forced)") == ""
    message = str(refused("the build of v2.8", "conflict: unable to delete 0123456789ab"))
    assert message == "the engine refused the build of v2.8: conflict: unable to delete 0123456789ab"
