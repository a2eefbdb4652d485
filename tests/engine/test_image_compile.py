"""torch.compile in the real v2.8 image: it works, `verify run --only compile` says so, and the check FAILs
naming the piece when that piece is really taken out of a container of the same image (as root, with dpkg),
then run as the image's own user, as people do."""

from __future__ import annotations

import json
from collections.abc import Iterator

import docker
import pytest
from docker.models.containers import Container

from verify.checks.compile import REPRO

pytestmark = pytest.mark.slow

REPORT = "/tmp/compile-report.json"
# What `apt-get install g++ libpython3-dev` added for each piece (the packages that hold the files).
CXX_PACKAGES = ("g++", "g++-14", "g++-14-x86-64-linux-gnu", "g++-x86-64-linux-gnu")
PYTHON_H_PACKAGES = ("libpython3-dev", "libpython3.13-dev")


@pytest.fixture
def container(docker_client: docker.DockerClient, built_image: str) -> Iterator[Container]:
    box = docker_client.containers.run(built_image, ["sleep", "900"], detach=True)
    try:
        yield box
    finally:
        box.remove(force=True)


def as_root(box: Container, *command: str) -> str:
    code, output = box.exec_run(list(command), user="0")
    assert code == 0, output.decode()
    return output.decode()


def verify_compile(box: Container) -> tuple[int, dict]:
    """`verify run --only compile` as the image's user; the exit code and the check's result."""
    code, output = box.exec_run(["python", "-m", "verify", "run", "--only", "compile", "--json", REPORT])
    text = output.decode()
    assert "Traceback" not in text, text
    report = json.loads(box.exec_run(["cat", REPORT])[1].decode())
    (result,) = report["results"]
    return code, result


def test_torch_compile_of_a_one_line_function_works(container: Container) -> None:
    code, output = container.exec_run(["bash", "-c", REPRO])
    assert code == 0, output.decode()
    assert "tensor([1.8415, 1.8415" in output.decode()  # sin(1) + 1


def test_verify_compile_passes_on_the_cpu(container: Container) -> None:
    code, result = verify_compile(container)
    assert (code, result["status"]) == (0, "pass"), result["summary"]
    assert result["summary"].startswith("compiled and matched eager: cpu ")
    assert result["summary"].endswith("GPU compile skipped: torch sees no CUDA GPU")
    assert result["details"]["toolchain"]["cxx_path"] == "/usr/bin/g++"
    assert result["details"]["toolchain"]["python_include"] == "/usr/include/python3.13"


def test_without_the_cxx_compiler_it_fails_naming_g_plus_plus(container: Container) -> None:
    as_root(container, "dpkg", "--purge", "--force-depends", *CXX_PACKAGES)
    assert container.exec_run(["which", "g++"])[0] != 0  # really gone
    code, result = verify_compile(container)
    assert (code, result["status"]) == (1, "fail")
    assert result["summary"].startswith(
        "cpu: no C++ compiler: Inductor runs g++ ($CXX unset) and it is not on PATH; fix: apt-get install g++"
    ), result["summary"]


def test_without_python_h_it_fails_naming_python3_dev(container: Container) -> None:
    as_root(container, "dpkg", "--purge", "--force-depends", *PYTHON_H_PACKAGES)
    assert container.exec_run(["test", "-e", "/usr/include/python3.13/Python.h"])[0] != 0  # really gone
    code, result = verify_compile(container)
    assert (code, result["status"]) == (1, "fail")
    assert result["summary"].startswith(
        "cpu: no Python headers: Python.h is not in /usr/include/python3.13 (sysconfig include); "
        "fix: apt-get install python3-dev"
    ), result["summary"]
    (outcome,) = result["details"]["outcomes"]
    assert (
        "Python.h: No such file or directory" in outcome["error"]
    )  # the real compile failed, for that reason
