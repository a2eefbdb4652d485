"""Real deployments of compose.yaml for the engine tests: unique project names, free ports, own workspaces.

Each `Deployment` is one `docker compose -p NAME` project run from the repository's compose files with the
CPU override (this host has no NVIDIA runtime, like CI). Which Compose runs them: $PYTORCH_CUDA_COMPOSE
(e.g. "docker-compose" or "/opt/compose-v2"), else `docker compose` (v2) when present, else `docker-compose`
(v1.29). Every deployment made by the factory is taken down with its volumes at the end of the session.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import paramiko
import pytest
import websocket
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

REPO = Path(__file__).resolve().parents[2]
CPU_FILES = ("compose.yaml", "compose.cpu.yaml")
HOST_UID = 1234  # not 1000 (the image's default) and not 0 (root here): proves the remap
HOST_GID = 2345
# Compose reads the repository's .env (a developer's settings) unless told otherwise: the tests give every
# setting explicitly and point --env-file at this empty file instead.
NO_ENV_FILE = Path(__file__).with_name("compose.empty.env")


def compose_command() -> list[str]:
    """The Compose CLI to test with, as an argv prefix; fails (CI) or skips (elsewhere) when there is none."""
    chosen = os.environ.get("PYTORCH_CUDA_COMPOSE")
    if chosen:
        return shlex.split(chosen)
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    message = "neither `docker compose` nor `docker-compose` is installed"
    if os.environ.get("CI"):
        pytest.fail(f"{message}; fix: .ci/run installs docker-compose", pytrace=False)
    pytest.skip(message)
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class SshKey:
    """A fresh ed25519 key pair: paramiko's form for logging in, OpenSSH's public line for the server."""

    private: paramiko.Ed25519Key
    public_line: str

    @classmethod
    def generate(cls, comment: str) -> SshKey:
        key = ed25519.Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
        private = paramiko.Ed25519Key.from_private_key(io.StringIO(pem))
        return cls(private, f"{private.get_name()} {private.get_base64()} {comment}")


@dataclass
class Deployment:
    """One compose project: `run` calls Compose with this project's name, files and environment.

    files=() means Compose's own default: compose.yaml plus compose.override.yaml (the GPU reservations).
    """

    project: str
    workspace: Path
    env: dict[str, str]
    files: tuple[str, ...] = CPU_FILES
    compose: list[str] = field(default_factory=compose_command)

    @property
    def jupyter_port(self) -> int:
        return int(self.env["JUPYTER_PORT"])

    @property
    def ssh_port(self) -> int:
        return int(self.env["SSH_PORT"])

    def run(self, *args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        file_args = [arg for name in self.files for arg in ("-f", str(REPO / name))]
        argv = [*self.compose, "--env-file", str(NO_ENV_FILE), "-p", self.project, *file_args, *args]
        # A developer's .env in the repository must not leak into the tests: everything comes from self.env.
        env = {**os.environ, **self.env}
        done = subprocess.run(argv, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(
                f"{shlex.join(argv)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
            )
        return done

    def up(self, *services: str) -> None:
        self.run("up", "-d", *services)

    def logs(self, service: str) -> str:
        return self.run("logs", "--no-color", service).stdout

    def container(self, service: str) -> str:
        container_id = self.run("ps", "-q", service).stdout.strip()
        assert container_id, f"no container for service {service} in project {self.project}"
        return container_id

    def volumes(self) -> set[str]:
        """Names of the Docker volumes that belong to this project (the short names from compose.yaml)."""
        listing = subprocess.run(
            ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={self.project}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        return {name.removeprefix(f"{self.project}_") for name in listing}

    def wait_jupyter(self, timeout: float = 180) -> None:
        wait_for(
            lambda: http_status(f"http://127.0.0.1:{self.jupyter_port}/api") == 200, timeout, "jupyter /api"
        )

    def wait_ssh(self, timeout: float = 120) -> None:
        wait_for(lambda: ssh_banner(self.ssh_port).startswith(b"SSH-2.0-"), timeout, "the ssh banner")

    def ssh(self, key: paramiko.PKey, user: str = "pytorch") -> paramiko.SSHClient:
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
        client.connect(
            "127.0.0.1",
            port=self.ssh_port,
            username=user,
            pkey=key,
            allow_agent=False,
            look_for_keys=False,
            timeout=20,
        )
        return client

    def host_key(self) -> str:
        """The server's ed25519 host key as `type base64`, read from the SSH handshake itself."""
        with paramiko.Transport(("127.0.0.1", self.ssh_port)) as transport:
            transport.get_security_options().key_types = ["ssh-ed25519"]
            transport.start_client(timeout=20)
            key = transport.get_remote_server_key()
            return f"{key.get_name()} {key.get_base64()}"


def ssh_exec(client: paramiko.SSHClient, command: str, timeout: float = 300) -> tuple[int, str, str]:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    out = stdout.read().decode()
    err = stderr.read().decode()
    return stdout.channel.recv_exit_status(), out, err


def http_status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def run_in_kernel(port: int, token: str, code: str, timeout: float = 300) -> str:
    """Start a kernel through the REST API, run `code` over its websocket, return what it printed (stdout)."""
    headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/kernels", b"{}", headers, method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        kernel_id = json.load(response)["id"]
    socket = websocket.create_connection(
        f"ws://127.0.0.1:{port}/api/kernels/{kernel_id}/channels",
        header=[f"Authorization: token {token}"],
        timeout=timeout,
    )
    msg_id = uuid.uuid4().hex
    header = {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex, "version": "5.3"}
    content = {
        "code": code,
        "silent": False,
        "store_history": False,
        "allow_stdin": False,
        "stop_on_error": True,
    }
    socket.send(
        json.dumps(
            {
                "header": header,
                "parent_header": {},
                "metadata": {},
                "content": content,
                "channel": "shell",
                "buffers": [],
            }
        )
    )
    out: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            message = json.loads(socket.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["header"]["msg_type"]
            if kind == "stream" and message["content"]["name"] == "stdout":  # not warnings on stderr
                out.append(message["content"]["text"])
            elif kind == "error":
                raise AssertionError("kernel error:\n" + "\n".join(message["content"]["traceback"]))
            elif kind == "status" and message["content"]["execution_state"] == "idle":
                return "".join(out)
    finally:
        socket.close()
    raise AssertionError(f"no result from the kernel within {timeout:.0f} s; output so far: {''.join(out)!r}")


def ssh_banner(port: int) -> bytes:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            return conn.recv(64)
    except OSError:
        return b""


def wait_for(ready: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ready():
            return
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture(scope="session")
def deployments(
    built_image: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Deployment]]:
    """A factory: `deployments(**env)` -> a new Deployment of `built_image`; all go `down -v` at the end."""
    made: list[Deployment] = []
    session = secrets.token_hex(3)

    def make(**overrides: str) -> Deployment:
        name = f"pctest{session}{len(made)}"
        root = tmp_path_factory.mktemp(name)
        env = {
            "PYTORCH_CUDA_IMAGE": built_image,
            "WORKSPACE_DIR": str(root / "workspace"),
            "HOST_UID": str(HOST_UID),
            "HOST_GID": str(HOST_GID),
            "JUPYTER_PORT": str(free_port()),
            "SSH_PORT": str(free_port()),
            "TENSORBOARD_PORT": str(free_port()),
            "HEALTHCHECK_INTERVAL": "2s",
            "JUPYTER_TOKEN": "",
            "SSH_AUTHORIZED_KEYS": "",
            "SSH_AUTHORIZED_KEYS_FILE": "/dev/null",
            **overrides,
        }
        deployment = Deployment(name, root / "workspace", env)
        made.append(deployment)
        return deployment

    yield make
    for deployment in made:
        deployment.run("down", "-v", "--remove-orphans", "-t", "5", check=False)


def effective_config(files: tuple[str, ...] | None) -> dict:
    """`compose config` parsed: the model Compose runs, after merging the files (None: Compose's default)."""
    argv = [*compose_command(), "--env-file", str(NO_ENV_FILE)]
    if files is not None:
        argv += [arg for name in files for arg in ("-f", str(REPO / name))]
    done = subprocess.run(
        [*argv, "config"],
        cwd=REPO,
        env=os.environ,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, f"compose config failed:\n{done.stderr}"
    return yaml.safe_load(done.stdout)
