"""The host's pip settings for the build: real pip.conf files in temp dirs, pip's own precedence, masking."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from images.build import add_parsers, request_from_cli
from images.pipconfig import config_files, describe, mask, read_file_settings, resolve

CA_PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


@pytest.fixture
def home(tmp_path: Path) -> dict[str, str]:
    """An environment whose user and XDG config dirs are temp dirs (the host's /etc/pip.conf still counts)."""
    (tmp_path / "home").mkdir()
    (tmp_path / "xdg").mkdir()
    return {"HOME": str(tmp_path / "home"), "XDG_CONFIG_DIRS": str(tmp_path / "xdg")}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def ca(tmp_path: Path, name: str = "ca.pem") -> Path:
    return write(tmp_path / name, CA_PEM)


def cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parsers(parser.add_subparsers())
    return parser.parse_args(["build", *argv])


def test_pip_config_file_index_extra_and_cert_are_taken(tmp_path: Path, home: dict[str, str]) -> None:
    bundle = ca(tmp_path)
    conf = write(
        tmp_path / "pip.conf",
        "[global]\nindex-url = https://mirror.example/simple\n"
        "extra-index-url = https://a.example/simple\n  https://b.example/simple\n"
        f"cert = {bundle}\ntimeout = 60\n",
    )
    host = resolve({**home, "PIP_CONFIG_FILE": str(conf)})
    assert host.index_url is not None and host.index_url.value == "https://mirror.example/simple"
    assert host.index_url.source == f"PIP_CONFIG_FILE={conf} [global]"
    assert host.extra_index_url == "https://a.example/simple https://b.example/simple"
    assert host.cert is not None and host.cert.value == str(bundle)
    assert [s.key for s in host.other_keys if str(conf) in s.source] == ["timeout"]  # seen, never taken


def test_only_three_keys_are_taken_a_site_constraint_never(tmp_path: Path, home: dict[str, str]) -> None:
    """A site cap (`constraint` for torch in /etc/xdg/pip/pip.conf) would change what the image installs."""
    write(tmp_path / "xdg/pip/pip.conf", "[global]\nconstraint = /etc/xdg/pip/torch-cap.txt\n")
    write(tmp_path / "home/.config/pip/pip.conf", "[install]\nfind-links = /opt/wheels\nno-index = true\n")
    host = resolve(home)
    ours = [s.key for s in host.other_keys if str(tmp_path) in s.source]  # the host's /etc/pip.conf aside
    assert sorted(ours) == ["constraint", "find-links", "no-index"]
    text = "\n".join(describe(host))
    assert "not taken: constraint" in text and "only index-url, extra-index-url and cert" in text


def test_later_files_win_and_install_beats_global(tmp_path: Path, home: dict[str, str]) -> None:
    write(tmp_path / "xdg/pip/pip.conf", "[global]\nindex-url = https://xdg.example/simple\n")
    write(tmp_path / "home/.pip/pip.conf", "[global]\nindex-url = https://legacy.example/simple\n")
    user = write(
        tmp_path / "home/.config/pip/pip.conf", "[global]\nindex_url = https://user.example/simple\n"
    )
    host = resolve(home)
    assert host.index_url is not None and host.index_url.value == "https://user.example/simple"
    assert host.index_url.source == f"{user} [global]"
    write(tmp_path / "xdg/pip/pip.conf", "[install]\nindex-url = https://xdg-install.example/simple\n")
    host = resolve(home)  # [install] of a lower file beats [global] of a higher one, as in pip
    assert host.index_url is not None and host.index_url.value == "https://xdg-install.example/simple"


def test_user_files_are_skipped_when_pip_config_file_exists(tmp_path: Path, home: dict[str, str]) -> None:
    write(tmp_path / "home/.config/pip/pip.conf", "[global]\nextra-index-url = https://user.example/simple\n")
    conf = write(tmp_path / "env.conf", "[global]\nindex-url = https://env.example/simple\n")
    host = resolve({**home, "PIP_CONFIG_FILE": str(conf)})
    assert host.extra_index_urls == ()
    assert host.index_url is not None and host.index_url.value == "https://env.example/simple"


def test_pip_config_file_devnull_loads_no_file(tmp_path: Path, home: dict[str, str]) -> None:
    write(tmp_path / "home/.config/pip/pip.conf", "[global]\nindex-url = https://user.example/simple\n")
    assert config_files({**home, "PIP_CONFIG_FILE": os.devnull}) == []
    host = resolve({**home, "PIP_CONFIG_FILE": os.devnull})
    assert host.taken() == [] and describe(host) == []


def test_env_wins_over_files_and_pip_cert_over_requests_ca_bundle(
    tmp_path: Path, home: dict[str, str]
) -> None:
    a, b, c = ca(tmp_path, "a.pem"), ca(tmp_path, "b.pem"), ca(tmp_path, "c.pem")
    conf = write(tmp_path / "pip.conf", f"[global]\nindex-url = https://file.example/simple\ncert = {a}\n")
    env = {**home, "PIP_CONFIG_FILE": str(conf), "PIP_INDEX_URL": "https://env.example/simple"}
    host = resolve({**env, "PIP_CERT": str(b), "REQUESTS_CA_BUNDLE": str(c)})
    assert host.index_url is not None and host.index_url.source == "env PIP_INDEX_URL"
    assert host.cert is not None and (host.cert.value, host.cert.source) == (str(b), "env PIP_CERT")
    host = resolve({**env, "REQUESTS_CA_BUNDLE": str(c)})  # pip's own cert (the file) comes first
    assert host.cert is not None and host.cert.value == str(a)
    host = resolve({**home, "PIP_CONFIG_FILE": os.devnull, "SSL_CERT_FILE": str(c)})
    assert host.cert is not None and host.cert.source == "env SSL_CERT_FILE"


def test_an_empty_env_value_switches_a_file_value_off(tmp_path: Path, home: dict[str, str]) -> None:
    conf = write(tmp_path / "pip.conf", "[global]\nextra-index-url = https://file.example/simple\n")
    host = resolve({**home, "PIP_CONFIG_FILE": str(conf), "PIP_EXTRA_INDEX_URL": ""})
    assert host.extra_index_urls == ()


def test_values_the_build_cannot_use_are_skipped_with_the_reason(
    tmp_path: Path, home: dict[str, str]
) -> None:
    not_pem = write(tmp_path / "ca.der", "binary")
    conf = write(
        tmp_path / "pip.conf",
        "[global]\nindex-url = http://localhost:3141/root/pypi/+simple/\n"
        "extra-index-url = file:///opt/pypi/simple https://ok.example/simple\n"
        f"cert = {not_pem}\n",
    )
    host = resolve({**home, "PIP_CONFIG_FILE": str(conf)})
    assert host.index_url is None and host.cert is None
    assert host.extra_index_url == "https://ok.example/simple"
    reasons = {s.setting.value: s.reason for s in host.skipped}
    assert "build container itself" in reasons["http://localhost:3141/root/pypi/+simple/"]
    assert "--wheelhouse" in reasons["file:///opt/pypi/simple"]
    assert "no PEM certificate" in reasons[str(not_pem)]
    host = resolve({**home, "PIP_CONFIG_FILE": os.devnull, "PIP_CERT": str(tmp_path)})
    assert host.cert is None and "not a file" in host.skipped[0].reason


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://ci-user:s3cret@pypi.example/simple", "https://ci-user:****@pypi.example/simple"),
        ("https://tok3n@pypi.example:8443/simple", "https://****@pypi.example:8443/simple"),
        ("https://pypi.example/simple", "https://pypi.example/simple"),
        ("https://u:p@ss@host.example/x", "https://u:****@host.example/x"),
    ],
)
def test_mask_hides_passwords_and_tokens(url: str, shown: str) -> None:
    assert mask(url) == shown


def test_describe_masks_credentials_and_names_the_source(tmp_path: Path, home: dict[str, str]) -> None:
    conf = write(
        tmp_path / "pip.conf", "[global]\nindex-url = https://ci-user:s3cret-token@pypi.example/simple\n"
    )
    text = "\n".join(describe(resolve({**home, "PIP_CONFIG_FILE": str(conf)})))
    assert "s3cret-token" not in text
    assert f"https://ci-user:****@pypi.example/simple  (from PIP_CONFIG_FILE={conf} [global])" in text


def test_flags_win_over_env_and_files(tmp_path: Path, home: dict[str, str]) -> None:
    file_ca, env_ca, flag_ca = ca(tmp_path, "f.pem"), ca(tmp_path, "e.pem"), ca(tmp_path, "x.pem")
    conf = write(
        tmp_path / "pip.conf",
        "[global]\nindex-url = https://file.example/simple\nextra-index-url = https://fx.example/s\n"
        f"cert = {file_ca}\n",
    )
    env = {**home, "PIP_CONFIG_FILE": str(conf), "PIP_INDEX_URL": "https://env.example/simple"}
    env["PIP_CERT"] = str(env_ca)
    request, host = request_from_cli(
        cli("--index-url", "https://flag.example/simple", "--extra-ca-cert", str(flag_ca)), env
    )
    assert request.index_url == "https://flag.example/simple" and request.extra_ca == flag_ca
    assert request.extra_index_url == "https://fx.example/s"  # no flag for it: the file's value
    assert host is not None and {s.reason for s in host.skipped} == {
        "--index-url given",
        "--extra-ca-cert given",
    }
    request, _ = request_from_cli(cli(), env)
    assert request.index_url == "https://env.example/simple" and request.extra_ca == env_ca
    request, host = request_from_cli(cli("--no-host-pip-config"), env)
    assert host is None
    assert (request.index_url, request.extra_index_url, request.extra_ca) == (None, None, None)


def test_no_pip_config_at_all_leaves_the_request_as_the_flags_say(home: dict[str, str]) -> None:
    """`make build` on a host without pip settings builds exactly as before."""
    request, host = request_from_cli(cli("--tag", "v2.8"), {**home, "PIP_CONFIG_FILE": os.devnull})
    assert host is not None and host.taken() == [] and describe(host) == []
    assert (request.index_url, request.extra_index_url, request.extra_ca) == (None, None, None)


def test_the_files_merge_as_pip_itself_merges_them(
    tmp_path: Path, home: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parity with the real pip: the same files, merged by us and by pip's own Configuration loader."""
    from pip._internal.configuration import Configuration

    write(tmp_path / "xdg/pip/pip.conf", "[global]\nindex-url = https://xdg.example/simple\ntimeout = 5\n")
    write(tmp_path / "home/.pip/pip.conf", "[install]\nextra-index-url = https://legacy.example/simple\n")
    write(tmp_path / "home/.config/pip/pip.conf", "[global]\nindex-url = https://user.example/simple\n")
    for name in [n for n in os.environ if n.startswith(("PIP_", "XDG_"))]:
        monkeypatch.delenv(name)
    for name, value in home.items():
        monkeypatch.setenv(name, value)
    config = Configuration(isolated=False)
    config.load()
    pip_view: dict[str, str] = {}
    for _file, values in config.items():  # files in pip's load order; a later file's key wins
        pip_view.update(values)
    taken, others, _ = read_file_settings(config_files(home))
    # The section a value came from is the end of its source label: "/path/pip.conf [install]".
    ours = {f"{s.source.rsplit('[', 1)[1][:-1]}.{s.key}": s.value for s in [*taken.values(), *others]}
    assert ours["global.index-url"] == "https://user.example/simple"
    assert {"global.index-url", "install.extra-index-url", "global.timeout"} <= ours.keys()
    mine = {k: v for k, v in pip_view.items() if k.split(".")[0] in ("global", "install")}
    assert ours == mine  # every key pip sees in those sections (the host's /etc/pip.conf too), same value
