"""compose.yaml end to end on the real v2.8 image: JupyterLab and SSH over the network, CPU override.

One deployment (`workspace`) runs jupyter + ssh for the whole module, with HOST_UID/HOST_GID 1234/2345 and a
fresh ed25519 key; the tests talk to it only through the published 127.0.0.1 ports, as a user would. The
tests run in file order: the last ones stop it, take it down and bring it back.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections.abc import Iterator

import paramiko
import pytest
from compose_fixtures import (
    HOST_GID,
    HOST_UID,
    Deployment,
    SshKey,
    deployments,  # noqa: F401  (the fixture)
    effective_config,
    http_status,
    run_in_kernel,
    ssh_exec,
    wait_for,
)

from images.matrix import ImageLine

SERVICES = ("jupyter", "ssh")


@pytest.fixture(scope="module")
def ssh_key() -> SshKey:
    return SshKey.generate("compose-engine-test")


@pytest.fixture(scope="module")
def workspace(deployments, ssh_key: SshKey) -> Iterator[Deployment]:  # noqa: F811
    deployment = deployments(SSH_AUTHORIZED_KEYS=ssh_key.public_line)
    deployment.up(*SERVICES)
    deployment.wait_jupyter()
    deployment.wait_ssh()
    yield deployment


@pytest.fixture(scope="module")
def token(workspace: Deployment) -> str:
    """The generated token, from the one line serve-jupyter prints."""
    for line in workspace.logs("jupyter").splitlines():
        if "serve-jupyter: open " in line and "token=" in line:
            return line.rsplit("token=", 1)[1].strip()
    raise AssertionError(f"no token URL in the jupyter logs:\n{workspace.logs('jupyter')}")


def health(container: str) -> str:
    inspect = subprocess.run(
        ["docker", "inspect", "-f", "{{.State.Health.Status}}", container],
        capture_output=True,
        text=True,
        check=True,
    )
    return inspect.stdout.strip()


# --- the files: GPUs by default, none with the CPU override (both Compose versions read the same files) ---


def test_default_files_reserve_every_gpu_and_the_cpu_override_none() -> None:
    default = effective_config(files=None)["services"]
    cpu = effective_config(files=("compose.yaml", "compose.cpu.yaml"))["services"]
    for name in SERVICES:
        (device,) = default[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia"
        assert device["capabilities"] == ["gpu"]
        assert device["count"] in ("all", -1)  # v1.29 prints "all", v2 normalises it to -1
        assert "deploy" not in cpu[name]
        assert cpu[name]["environment"]["NVIDIA_VISIBLE_DEVICES"] == "void"


def test_default_files_make_the_engine_look_for_gpus(deployments) -> None:  # noqa: F811
    """With no -f, Compose loads compose.override.yaml: here (no NVIDIA runtime) the engine must refuse."""
    runtimes = subprocess.run(
        ["docker", "info", "-f", "{{json .Runtimes}}"], capture_output=True, text=True, check=True
    ).stdout
    if "nvidia" in runtimes:
        pytest.skip("this engine has the NVIDIA runtime, so the GPU reservation would succeed here")
    gpu = deployments()
    gpu.files = ()
    started = gpu.run("up", "-d", "ssh", check=False)
    assert started.returncode != 0
    assert "could not select device driver" in started.stdout + started.stderr


# --- jupyter --------------------------------------------------------------------------------------------


def test_ports_are_published_on_localhost_only(workspace: Deployment) -> None:
    for service, port in (("jupyter", workspace.jupyter_port), ("ssh", workspace.ssh_port)):
        inspect = subprocess.run(
            ["docker", "inspect", "-f", "{{json .NetworkSettings.Ports}}", workspace.container(service)],
            capture_output=True,
            text=True,
            check=True,
        )
        bindings = [b for published in json.loads(inspect.stdout).values() if published for b in published]
        assert bindings == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]


def test_services_report_healthy(workspace: Deployment) -> None:
    for service in SERVICES:
        container = workspace.container(service)
        wait_for(lambda c=container: health(c) == "healthy", 90, f"{service} to report healthy")


def test_jupyter_api_needs_the_token(workspace: Deployment, token: str) -> None:
    url = f"http://127.0.0.1:{workspace.jupyter_port}/api/status"
    assert http_status(url, token) == 200
    assert http_status(url) == 403
    assert http_status(url, "not-the-token") == 403


def test_generated_token_is_shown_once(workspace: Deployment, token: str) -> None:
    assert len(token) >= 40
    assert workspace.logs("jupyter").count(token) == 1


def test_kernel_runs_torch_and_transformers_as_the_host_user(
    workspace: Deployment, token: str, matrix_line: ImageLine
) -> None:
    code = "import os, torch, transformers; print(torch.__version__, transformers.__version__, os.getuid())"
    torch_version, transformers_version, uid = run_in_kernel(workspace.jupyter_port, token, code).split()
    assert torch_version.split("+")[0] == matrix_line.torch
    assert transformers_version == matrix_line.packages["transformers"]
    assert int(uid) == HOST_UID


def test_notebook_saved_in_workspace_belongs_to_the_host_user(workspace: Deployment, token: str) -> None:
    body = json.dumps({"type": "file", "format": "text", "content": "from jupyter\n"}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{workspace.jupyter_port}/api/contents/from-jupyter.txt",
        body,
        {"Authorization": f"token {token}", "Content-Type": "application/json"},
        method="PUT",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status in (200, 201)
    saved = workspace.workspace / "from-jupyter.txt"
    assert saved.read_text() == "from jupyter\n"
    assert (saved.stat().st_uid, saved.stat().st_gid) == (HOST_UID, HOST_GID)


# --- ssh -----------------------------------------------------------------------------------------------


def test_ssh_key_login_is_the_host_user_and_runs_verify(workspace: Deployment, ssh_key: SshKey) -> None:
    with workspace.ssh(ssh_key.private) as client:
        status, out, err = ssh_exec(
            client, "id -un; id -u; id -g; command -v python; echo $TENSORBOARD_LOGDIR"
        )
        assert status == 0, err
        # TENSORBOARD_LOGDIR: an example run over SSH logs where the tensorboard service looks.
        expected = ["pytorch", str(HOST_UID), str(HOST_GID), "/opt/venv/bin/python", "/workspace/runs"]
        assert out.split() == expected
        status, out, err = ssh_exec(client, "verify run --only env")
        assert status == 0, f"verify run --only env failed ({status}):\n{out}\n{err}"
        assert "env" in out


def test_ssh_refuses_passwords_and_root(workspace: Deployment, ssh_key: SshKey) -> None:
    with paramiko.Transport(("127.0.0.1", workspace.ssh_port)) as transport:
        transport.start_client(timeout=20)
        with pytest.raises(paramiko.BadAuthenticationType) as refused:
            transport.auth_password("pytorch", "pytorch")
        assert refused.value.allowed_types == ["publickey"]
    with pytest.raises(paramiko.AuthenticationException):
        workspace.ssh(ssh_key.private, user="root")
    with pytest.raises(paramiko.AuthenticationException):
        workspace.ssh(SshKey.generate("a stranger").private)


def test_file_created_over_ssh_belongs_to_the_host_user(workspace: Deployment, ssh_key: SshKey) -> None:
    with workspace.ssh(ssh_key.private) as client:
        status, _, err = ssh_exec(client, "echo over ssh > /workspace/from-ssh.txt")
        assert status == 0, err
    created = workspace.workspace / "from-ssh.txt"
    assert created.read_text() == "over ssh\n"
    assert (created.stat().st_uid, created.stat().st_gid) == (HOST_UID, HOST_GID)


def test_host_keys_differ_between_deployments_and_survive_a_restart(
    workspace: Deployment,
    deployments,  # noqa: F811
) -> None:
    first = workspace.host_key()
    other = deployments()
    other.up("ssh")
    other.wait_ssh()
    assert other.host_key() != first
    workspace.run("restart", "ssh")
    workspace.wait_ssh()
    assert workspace.host_key() == first


def test_tensorboard_profile_serves_on_localhost_and_shows_an_example_run(workspace: Deployment) -> None:
    """The tutorial's loop: fine-tune in the jupyter service, watch the run in the tensorboard service."""
    workspace.run("--profile", "tensorboard", "up", "-d", "tensorboard")
    port = int(workspace.env["TENSORBOARD_PORT"])
    try:
        wait_for(lambda: http_status(f"http://127.0.0.1:{port}/") == 200, 90, "tensorboard")
        train = (
            "copy-examples && cd /workspace/examples && python finetune_bert.py --tiny --epochs 1"
            " --data data/chinese_reviews_synthetic.csv --output bert-finetuned"
        )
        done = workspace.run("exec", "-T", "-u", "pytorch", "jupyter", "bash", "-c", train, timeout=600)
        assert "TensorBoard logs: /workspace/runs/bert-finetuned/" in done.stdout, done.stdout[-3000:]

        def run_listed() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs", timeout=5) as answer:
                return any(run.startswith("bert-finetuned/") for run in json.load(answer))

        wait_for(run_listed, 60, "TensorBoard listing the example's run")
    except AssertionError as exc:
        logs = workspace.run(
            "--profile", "tensorboard", "logs", "--no-color", "--tail", "15", "tensorboard"
        ).stdout
        raise AssertionError(f"{exc}; its last log lines:\n{logs}") from None
    finally:
        workspace.run("--profile", "tensorboard", "rm", "-s", "-f", "tensorboard")


# --- lifecycle: these change the deployment, so they come last ------------------------------------------


def test_stop_takes_under_ten_seconds_with_a_kernel_running(workspace: Deployment, token: str) -> None:
    assert run_in_kernel(workspace.jupyter_port, token, "print('busy')").strip() == "busy"
    started = time.monotonic()
    workspace.run("stop")
    elapsed = time.monotonic() - started
    assert elapsed < 10, f"`compose stop` took {elapsed:.1f} s: a service ignores SIGTERM"


def test_down_keeps_the_named_volumes_and_the_host_keys(workspace: Deployment) -> None:
    workspace.up("ssh")
    workspace.wait_ssh()
    before = workspace.host_key()
    workspace.run("down")
    assert {"hf-cache", "ssh-host-keys"} <= workspace.volumes()
    workspace.up("ssh")
    workspace.wait_ssh()
    assert workspace.host_key() == before


def test_image_carries_no_ssh_host_keys(built_image: str) -> None:
    listing = subprocess.run(
        ["docker", "run", "--rm", "--entrypoint", "ls", built_image, "-A", "/etc/ssh"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert "sshd_config" in listing
    assert not [name for name in listing if name.startswith("ssh_host_")]
