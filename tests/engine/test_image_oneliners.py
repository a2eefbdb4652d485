"""The README's plain `docker run` one-liners, run for real on the v2.8 image (CPU: no --gpus here).

Each test types what a user types (the docker CLI, the image's default command and user), then checks the
result from outside the container as the user would: the Jupyter URL from the logs, an SSH login with a key,
an exit code, a file in a host directory. Ports are published on 127.0.0.1 only, so a test run opens nothing.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paramiko
import pytest
import requests
from compose_fixtures import SshKey, free_port, ssh_banner, ssh_exec, wait_for

HF_MOUNT = "/home/pytorch/.cache/huggingface"  # where the README mounts ~/.cache/huggingface
IMAGE_UID = 1000  # the image's user `pytorch`
README = Path(__file__).resolve().parents[2] / "README.md"
# The README's one-liners, which the tests below run (publishing on 127.0.0.1, without --gpus, -it or --rm).
README_ONE_LINERS = (
    "docker run -it --gpus all -p 8888:8888 pytorch-cuda:v2.8",
    "docker run -it --gpus all pytorch-cuda:v2.8 bash",
    "docker run --rm --gpus all pytorch-cuda:v2.8 verify run",
    'docker run -d --user 0 -p 127.0.0.1:2222:22 -e SSH_AUTHORIZED_KEYS="$(cat ~/.ssh/id_ed25519.pub)" '
    "pytorch-cuda:v2.8 serve-ssh",
    "-v ~/.cache/huggingface:/home/pytorch/.cache/huggingface",
)


def docker(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def detached(built_image: str) -> Iterator[Callable[..., str]]:
    """`docker run -d ARGS...`; returns the container id; removes every container it started."""
    started: list[str] = []

    def start(*args: str) -> str:
        done = docker("run", "-d", *args)
        assert done.returncode == 0, f"docker run -d {' '.join(args)} failed:\n{done.stderr}"
        started.append(done.stdout.strip())
        return started[-1]

    yield start
    for container in started:
        docker("rm", "-f", container)


def logs(container: str) -> str:
    done = docker("logs", container)
    return done.stdout + done.stderr


def running(container: str) -> bool:
    return docker("inspect", "-f", "{{.State.Running}}", container).stdout.strip() == "true"


def jupyter_token(container: str, timeout: float = 120) -> str:
    """The token from the one line serve-jupyter prints: `serve-jupyter: open http://...:8888/lab?token=...`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in logs(container).splitlines():
            if "serve-jupyter: open http://127.0.0.1:8888/lab?token=" in line:
                return line.rsplit("token=", 1)[1].strip()
        assert running(container), f"the container exited:\n{logs(container)}"
        time.sleep(1)
    raise AssertionError(f"no token URL in the logs after {timeout:.0f} s:\n{logs(container)}")


def status(url: str) -> int:
    try:
        return requests.get(url, timeout=10, allow_redirects=False).status_code
    except requests.ConnectionError:
        return 0


def test_the_readme_shows_the_one_liners_these_tests_run() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [line for line in README_ONE_LINERS if line not in text]
    assert not missing, f"README.md no longer shows {missing}; update README_ONE_LINERS and the tests with it"


# --- docker run -p 8888:8888 IMAGE: JupyterLab, behind a token printed once ----------------------------


def test_default_command_serves_jupyterlab_behind_the_printed_token(
    built_image: str, detached: Callable[..., str]
) -> None:
    port = free_port()
    container = detached("-p", f"127.0.0.1:{port}:8888", built_image)
    token = jupyter_token(container)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: status(f"{base}/api") == 200, 120, "jupyter /api")

    assert len(token) >= 40
    assert status(f"{base}/lab?token={token}") == 200
    without = requests.get(f"{base}/lab", timeout=10, allow_redirects=False)
    assert without.status_code in (302, 403), without.status_code
    if without.status_code == 302:
        assert "/login" in without.headers["Location"]
    assert status(f"{base}/api/status") == 403
    assert status(f"{base}/lab?token=not-the-token") in (302, 403)
    assert logs(container).count(token) == 1, "the token must be printed once, not repeated in Jupyter's log"

    processes = docker("exec", container, "ps", "-eo", "uid=,args=").stdout
    assert "jupyter-lab" in processes or "jupyter lab" in processes, processes
    assert all(line.split()[0] == str(IMAGE_UID) for line in processes.splitlines()), processes

    began = time.monotonic()
    assert docker("stop", container, timeout=60).returncode == 0
    assert time.monotonic() - began < 10, "docker stop waited for its SIGKILL: SIGTERM did not reach Jupyter"


def test_bash_command_gives_a_shell(built_image: str) -> None:
    done = docker("run", "--rm", built_image, "bash", "-c", "echo ok; id -un; pwd")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["ok", "pytorch", "/workspace"]


def test_verify_run_one_liner_exits_0(built_image: str) -> None:
    done = docker("run", "--rm", built_image, "verify", "run", "--only", "env")
    assert done.returncode == 0, (
        f"verify run --only env exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    )
    assert "env" in done.stdout


# --- the SSH workspace without compose: --user 0 for sshd, a key in SSH_AUTHORIZED_KEYS -----------------


@pytest.fixture(scope="module")
def ssh_key() -> SshKey:
    return SshKey.generate("oneliner-engine-test")


@pytest.fixture(scope="module")
def ssh_container(built_image: str, ssh_key: SshKey) -> Iterator[int]:
    """The README's SSH one-liner; yields the published port."""
    port = free_port()
    done = docker(
        "run", "-d", "--user", "0", "-p", f"127.0.0.1:{port}:22",
        "-e", f"SSH_AUTHORIZED_KEYS={ssh_key.public_line}", built_image, "serve-ssh",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    container = done.stdout.strip()
    try:
        wait_for(lambda: ssh_banner(port).startswith(b"SSH-2.0-"), 120, "the ssh banner")
        yield port
    finally:
        docker("rm", "-f", container)


def ssh_login(port: int, key: paramiko.PKey) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())
    client.connect(
        "127.0.0.1",
        port=port,
        username="pytorch",
        pkey=key,
        allow_agent=False,
        look_for_keys=False,
        timeout=20,
    )
    return client


def test_ssh_one_liner_logs_in_with_the_key_into_the_venv(ssh_container: int, ssh_key: SshKey) -> None:
    with ssh_login(ssh_container, ssh_key.private) as client:
        code, out, err = ssh_exec(client, "id -un; id -u; command -v python; echo $HF_HOME")
    assert code == 0, err
    assert out.split() == ["pytorch", str(IMAGE_UID), "/opt/venv/bin/python", HF_MOUNT]
    with pytest.raises(paramiko.AuthenticationException):
        ssh_login(ssh_container, SshKey.generate("a stranger").private)


def test_vscode_remote_ssh_finds_what_its_server_install_needs(ssh_container: int, ssh_key: SshKey) -> None:
    """VS Code Remote-SSH downloads its server with curl or wget and unpacks it with tar, over this shell."""
    with ssh_login(ssh_container, ssh_key.private) as client:
        code, out, err = ssh_exec(client, "curl --version && wget --version && tar --version")
    assert code == 0, f"exit {code}:\n{out}\n{err}"
    assert "curl " in out and "GNU Wget" in out and "GNU tar" in out


# --- a Hugging Face cache mounted from the host --------------------------------------------------------

HF_PROBE = """
import os, pathlib
from huggingface_hub import constants
hub = pathlib.Path(constants.HF_HUB_CACHE)
hub.mkdir(parents=True, exist_ok=True)
(hub / "written-inside.txt").write_text("from the container\\n")
cache = pathlib.Path.home() / ".cache"
print(constants.HF_HOME, hub, cache.stat().st_uid, os.access(cache, os.W_OK))
"""


def _host_dir(path: Path, uid: int) -> Path:
    """A host directory that belongs to `uid`, as a user's ~/.cache/huggingface belongs to them."""
    path.mkdir()
    if os.geteuid() == 0:
        os.chown(path, uid, uid)
    elif os.geteuid() != uid:
        path.chmod(0o777)  # cannot hand it over without root; let the container's user write
    return path


def test_hf_cache_mounted_where_the_readme_says_is_the_one_used(built_image: str, tmp_path: Path) -> None:
    host = _host_dir(tmp_path / "huggingface", IMAGE_UID)
    done = docker("run", "--rm", "-v", f"{host}:{HF_MOUNT}", built_image, "python", "-c", HF_PROBE)
    assert done.returncode == 0, done.stderr
    hf_home, hub, cache_uid, cache_writable = done.stdout.split()
    assert (hf_home, hub) == (HF_MOUNT, f"{HF_MOUNT}/hub")
    # Docker did not make ~/.cache (the mount's parent) as root: pip, torch and matplotlib still write there.
    assert (cache_uid, cache_writable) == (str(IMAGE_UID), "True")
    assert (host / "hub" / "written-inside.txt").read_text() == "from the container\n"


def test_hf_cache_mount_with_host_ids_belongs_to_the_host_user(built_image: str, tmp_path: Path) -> None:
    """A host user other than 1000: root start, HOST_UID/HOST_GID, as the README's note on your UID shows."""
    if os.geteuid() != 0:
        pytest.skip("needs root on the host to make a directory owned by another UID")
    uid = 1234
    host = _host_dir(tmp_path / "huggingface", uid)
    done = docker(
        "run", "--rm", "--user", "0", "-e", f"HOST_UID={uid}", "-e", f"HOST_GID={uid}",
        "-v", f"{host}:{HF_MOUNT}", built_image, "python", "-c", HF_PROBE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    written = host / "hub" / "written-inside.txt"
    assert written.read_text() == "from the container\n"
    assert (written.stat().st_uid, written.stat().st_gid) == (uid, uid)
