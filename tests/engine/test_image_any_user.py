"""The image under a user it was not built for, on a root filesystem it may not write: the real v2.8 image.

How platforms start containers: `docker run --user $(id -u):$(id -g)` (files in a bind mount stay the
caller's), Kubernetes `runAsUser` and OpenShift (an arbitrary UID with no passwd entry), and
`readOnlyRootFilesystem: true` / `docker run --read-only --tmpfs /tmp:exec`. Before the entrypoint adopted
such a user, HOME was `/`, `whoami` failed, JupyterLab died on '/.local' and torch.compile on
getpass.getuser() (verify's compile check FAILed). Each test below makes one of those starts for real and
drives the service as a user would (JupyterLab, TensorBoard and SSH over the network).
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest
from compose_fixtures import SshKey, free_port, http_status, run_in_kernel, ssh_banner, ssh_exec, wait_for

# func_only: the limit is for the test itself; the shared image builds its fixtures may start first have
# their own bounds and take what load and cache make them (with a v2.8 build beside it, test_slurm's first
# test once spent over 7 of its 10 minutes in them and failed, the job itself being fine).
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900, func_only=True)]

UID, GID = 12345, 12345  # no passwd entry in the image
ANY_USER = ("--user", f"{UID}:{GID}")
# :exec because Docker mounts a --tmpfs noexec by default, where torch.compile cannot load what it builds
# (test_a_noexec_tmp_is_named_by_the_entrypoint_and_the_compile_check); a Kubernetes emptyDir is exec.
READ_ONLY = ("--read-only", "--tmpfs", "/tmp:exec")


def docker_run(image: str, *args: str, command: tuple[str, ...], timeout: float = 600):
    return subprocess.run(
        ["docker", "run", "--rm", *args, image, *command],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    """A host folder to bind-mount at /workspace that any UID may write (as `mkdir -m 777` would give)."""
    folder = tmp_path / "workspace"
    folder.mkdir()
    folder.chmod(0o777)
    return folder


@pytest.fixture
def detached(built_image: str) -> Iterator[Callable[..., str]]:
    """Start containers in the background; every one is removed at the end, its log printed on failure."""
    names: list[str] = []

    def start(*args: str, command: tuple[str, ...]) -> str:
        name = f"pctest-anyuser-{uuid.uuid4().hex[:8]}"
        subprocess.run(["docker", "run", "-d", "--name", name, *args, built_image, *command], check=True)
        names.append(name)
        return name

    yield start
    for name in names:
        logs = subprocess.run(["docker", "logs", name], capture_output=True, text=True, check=False)
        print(f"--- docker logs {name}\n{logs.stdout}{logs.stderr}")
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False)


def owners(folder: Path) -> set[int]:
    return {path.stat().st_uid for path in folder.rglob("*")}


@pytest.mark.parametrize("root", ["writable root", "read-only root"])
def test_an_unknown_uid_gets_a_name_and_a_writable_home(built_image: str, root: str) -> None:
    args = ANY_USER + (READ_ONLY if root == "read-only root" else ())
    script = (
        "id -u; whoami; python -c 'import getpass; print(getpass.getuser())'; echo \"$HOME\"; "
        'touch "$HOME/.probe" && echo home-writable; '
        "python -c 'import tempfile; print(tempfile.gettempdir())'"
    )
    done = docker_run(built_image, *args, command=("bash", "-c", script))
    assert done.returncode == 0, done.stderr
    uid, whoami, getuser, home, writable, tmp = done.stdout.split()
    assert (uid, whoami, getuser, writable, tmp) == (str(UID), "pytorch", "pytorch", "home-writable", "/tmp")
    assert home != "/" and home.startswith("/tmp/")
    assert "HOME=/ is not writable by UID 12345" in done.stderr  # says where HOME went and how to keep it


def test_torch_compile_and_verify_pass_for_an_unknown_uid_on_a_read_only_root(built_image: str) -> None:
    done = docker_run(
        built_image,
        *ANY_USER,
        *READ_ONLY,
        command=("verify", "run", "--quick", "--only", "env,compile", "--json", "/tmp/report.json"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 pass" in done.stdout, done.stdout


def test_a_noexec_tmp_is_named_by_the_entrypoint_and_the_compile_check(built_image: str) -> None:
    """`--tmpfs /tmp` as people type it is noexec: the start warns with the fix, verify says why it fails."""
    done = docker_run(
        built_image,
        *ANY_USER,
        "--read-only",
        "--tmpfs",
        "/tmp",
        command=("verify", "run", "--quick", "--only", "compile", "--json", "/tmp/report.json"),
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "warning: /tmp is mounted noexec" in done.stderr
    assert "fix: docker run --tmpfs /tmp:exec" in done.stderr
    assert "mounted noexec, so no built kernel can load" in " ".join(done.stdout.split()), done.stdout


def test_an_unwritable_tmpdir_and_home_are_replaced_and_named(built_image: str) -> None:
    done = docker_run(
        built_image,
        *ANY_USER,
        *READ_ONLY,
        "-e",
        "TMPDIR=/usr/share",
        "-e",
        "HOME=/usr",
        command=("verify", "run", "--quick", "--only", "compile", "--json", "/tmp/report.json"),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "TMPDIR=/usr/share is not writable: using /tmp; fix:" in done.stderr
    assert "HOME=/usr is not writable by UID 12345" in done.stderr


@pytest.mark.parametrize(
    ("ipc", "message"),
    [
        ("shareable", "/tmp is not writable (a read-only root without a tmpfs there): TMPDIR=/dev/shm"),
        ("none", "no directory is writable"),  # no /dev/shm either: nothing to fall back on
    ],
)
def test_a_read_only_root_without_a_tmpfs_is_named_with_the_fix(
    built_image: str, ipc: str, message: str
) -> None:
    done = docker_run(
        built_image, *ANY_USER, "--read-only", "--ipc", ipc, command=("sh", "-c", 'echo "${TMPDIR:-unset}"')
    )
    assert done.returncode == 0, done.stderr
    assert message in done.stderr
    assert "fix: docker run --tmpfs /tmp" in done.stderr
    assert done.stdout.strip() == ("/dev/shm" if ipc == "shareable" else "unset")


def test_root_start_on_a_read_only_root_runs_as_the_host_uid(built_image: str) -> None:
    """compose's path (root start, HOST_UID) with `read_only: true`: no usermod, still the user and a HOME."""
    done = docker_run(
        built_image,
        "--user",
        "0:0",
        *READ_ONLY,
        "-e",
        "HOST_UID=4321",
        "-e",
        "HOST_GID=4322",
        command=("bash", "-c", 'id -u; id -g; whoami; touch "$HOME/.probe" && echo home-writable'),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["4321", "4322", "pytorch", "home-writable"]
    assert "/etc/passwd is read-only" in done.stderr


def test_jupyterlab_runs_torch_compile_and_saves_as_the_callers_uid(
    built_image: str, detached, workspace: Path
) -> None:
    port, token = free_port(), uuid.uuid4().hex
    detached(
        *ANY_USER,
        *READ_ONLY,
        "-p",
        f"127.0.0.1:{port}:8888",
        "-e",
        f"JUPYTER_TOKEN={token}",
        "-v",
        f"{workspace}:/workspace",
        command=("serve-jupyter",),
    )
    wait_for(lambda: http_status(f"http://127.0.0.1:{port}/api/status", token) == 200, 180, "jupyter")
    code = (
        "import os, torch\n"
        "f = torch.compile(lambda x: x.sin() + 1)\n"
        "print(os.getuid(), float(f(torch.zeros(4)).sum()))"
    )
    assert run_in_kernel(port, token, code).split() == [str(UID), "4.0"]
    empty = {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    notebook = {"type": "notebook", "content": empty}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/contents/saved.ipynb",
        json.dumps(notebook).encode(),
        {"Authorization": f"token {token}", "Content-Type": "application/json"},
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        assert response.status in (200, 201)
    assert (workspace / "saved.ipynb").stat().st_uid == UID


def test_tensorboard_serves_for_an_unknown_uid_on_a_read_only_root(
    built_image: str, detached, workspace: Path
) -> None:
    port = free_port()
    detached(
        *ANY_USER,
        *READ_ONLY,
        "-p",
        f"127.0.0.1:{port}:6006",
        "-v",
        f"{workspace}:/workspace",
        command=("serve-tensorboard",),
    )
    wait_for(lambda: http_status(f"http://127.0.0.1:{port}/") == 200, 120, "tensorboard")
    assert (workspace / "runs").stat().st_uid == UID  # the log folder it made is the caller's


def test_the_examples_copy_and_train_as_the_callers_uid(built_image: str, workspace: Path) -> None:
    script = (
        "copy-examples && cd /workspace/examples && python finetune_bert.py --tiny "
        "--data data/chinese_reviews_synthetic.csv --epochs 1 --batch-size 8 --output /workspace/model"
    )
    done = docker_run(
        built_image, *ANY_USER, *READ_ONLY, "-v", f"{workspace}:/workspace", command=("bash", "-c", script)
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    assert (workspace / "model").is_dir()
    assert owners(workspace) == {UID}, "files in the bind mount must belong to the caller"


@pytest.mark.parametrize(
    "args",
    [
        (*ANY_USER, *READ_ONLY),
        ("--user", "0:0", *READ_ONLY, "-e", "HOST_UID=4321", "-e", "HOST_GID=4322"),
    ],
    ids=["unknown uid, read-only root", "root start, read-only root (compose with read_only)"],
)
def test_ssh_logs_in_as_the_user_sshd_runs_as(
    built_image: str, detached, workspace: Path, args: tuple[str, ...]
) -> None:
    """No root to switch users and no /etc to write: sshd runs as the user, key-only, and a login over the
    network gets the name, a HOME, the venv's python and files in /workspace that belong to that UID."""
    key = SshKey.generate("any-user-test")
    port = free_port()
    detached(
        *args,
        "-p",
        f"127.0.0.1:{port}:22",
        "-e",
        f"SSH_AUTHORIZED_KEYS={key.public_line}",
        "-v",
        f"{workspace}:/workspace",
        command=("serve-ssh",),
    )
    wait_for(lambda: ssh_banner(port).startswith(b"SSH-2.0-"), 120, "the ssh banner")
    uid = "4321" if "HOST_UID=4321" in args else str(UID)
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect("127.0.0.1", port=port, username="pytorch", pkey=key.private, allow_agent=False,
                   look_for_keys=False, timeout=20)  # fmt: skip
    try:
        script = (
            'id -u; whoami; touch "$HOME/.probe" && echo home-writable; '
            "python -c 'import torch' && echo torch-ok; touch /workspace/x"
        )
        code, out, err = ssh_exec(client, script)
        assert code == 0, err
        assert out.split() == [uid, "pytorch", "home-writable", "torch-ok"], out + err
        code, out, _ = ssh_exec(client, "bash -lc 'command -v verify'")  # a login shell keeps the venv
        assert (code, out.strip()) == (0, "/opt/venv/bin/verify")
    finally:
        client.close()
    assert str((workspace / "x").stat().st_uid) == uid
    # and nobody else: not root, not with a password
    with pytest.raises(paramiko.AuthenticationException):
        root = paramiko.SSHClient()
        root.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        root.connect("127.0.0.1", port=port, username="root", pkey=key.private, allow_agent=False,
                     look_for_keys=False, timeout=20)  # fmt: skip


def test_the_entrypoint_leaves_a_known_user_alone(built_image: str) -> None:
    """The image's own user with its own HOME: no message, no nss_wrapper, nothing moved."""
    done = docker_run(
        built_image, "--user", "1000:1000", command=("bash", "-c", 'echo "$HOME ${LD_PRELOAD:-none}"')
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["/home/pytorch", "none"]
    assert done.stderr == ""


def test_the_test_uid_really_has_no_passwd_entry(built_image: str) -> None:
    """Guard for this module: were 12345 in the image's /etc/passwd, the tests above would prove nothing."""
    done = docker_run(built_image, "--entrypoint", "getent", command=("passwd", str(UID)))
    assert done.returncode == 2, done.stdout
