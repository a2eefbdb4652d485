"""The package index and CA the host's pip already uses, for `python -m images build`.

A machine behind a TLS-inspecting proxy or with a PyPI mirror has usually taught its pip about it once
(pip.conf, PIP_* variables). The build reads the same settings so a first `make build` works there without
flags. Only three keys are taken: `index-url`, `extra-index-url` and `cert`. Every other key (`constraint`,
`find-links`, `timeout`, ...) is left out on purpose: a site cap such as a `constraint` for torch, or a
local wheel folder, would silently change what the image installs, and the lock already decides that.

Where pip looks (later wins, as in pip itself): /etc/xdg/pip/pip.conf (each $XDG_CONFIG_DIRS entry),
/etc/pip.conf, ~/.pip/pip.conf, ~/.config/pip/pip.conf (skipped when $PIP_CONFIG_FILE names an existing
file, as pip does), $PIP_CONFIG_FILE; in each, the `[install]` section over `[global]`. Then the
environment: PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_CERT over every file; REQUESTS_CA_BUNDLE, then
SSL_CERT_FILE, only when pip itself names no cert. Explicit build flags win over all of it.

Values the build container could not use are skipped with the reason: a `file://` index or a path (the
host's folders are not in the build; use --wheelhouse), an index on localhost (inside the build that is the
build container), a cert that is not a PEM file.
"""

from __future__ import annotations

import configparser
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

TAKEN_KEYS = ("index-url", "extra-index-url", "cert")
SECTIONS = ("global", "install")  # pip's override order for `pip install`: [install] beats [global]
ENV_KEYS = {"PIP_INDEX_URL": "index-url", "PIP_EXTRA_INDEX_URL": "extra-index-url", "PIP_CERT": "cert"}
CA_ENV_FALLBACKS = ("REQUESTS_CA_BUNDLE", "SSL_CERT_FILE")
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "0.0.0.0")


@dataclass(frozen=True)
class Setting:
    """One value and where it came from ("/etc/pip.conf [global]", "env PIP_CERT", "--index-url")."""

    key: str
    value: str
    source: str


@dataclass(frozen=True)
class Skipped:
    setting: Setting
    reason: str


@dataclass(frozen=True)
class HostPipSettings:
    """What the build takes from the host's pip, and what it saw but did not take (and why)."""

    index_url: Setting | None = None
    extra_index_urls: tuple[Setting, ...] = ()
    cert: Setting | None = None
    skipped: tuple[Skipped, ...] = ()
    other_keys: tuple[Setting, ...] = ()  # keys other than TAKEN_KEYS found in the files: never taken
    files: tuple[Path, ...] = field(default=())  # the config files that existed and were read

    @property
    def extra_index_url(self) -> str | None:
        """The value for the EXTRA_INDEX_URL build arg: pip splits it on whitespace."""
        return " ".join(s.value for s in self.extra_index_urls) or None

    def taken(self) -> list[Setting]:
        return [s for s in (self.index_url, *self.extra_index_urls, self.cert) if s is not None]


def config_files(env: Mapping[str, str], home: Path | None = None) -> list[tuple[Path, str]]:
    """pip's config files in load order (later wins) with a label for messages; may not exist."""
    home = home or Path(env.get("HOME") or Path.home())
    env_file = env.get("PIP_CONFIG_FILE")
    if env_file == os.devnull:  # pip's documented way to load no file at all
        return []
    xdg_dirs = [d for d in (env.get("XDG_CONFIG_DIRS") or "/etc/xdg").split(os.pathsep) if d]
    files = [(Path(d) / "pip" / "pip.conf", "") for d in xdg_dirs]
    files.append((Path("/etc/pip.conf"), ""))
    if not (env_file and Path(env_file).exists()):
        xdg_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        files += [(home / ".pip" / "pip.conf", ""), (xdg_home / "pip" / "pip.conf", "")]
    if env_file:
        files.append((Path(env_file), "PIP_CONFIG_FILE="))
    return files


def _normalize(name: str) -> str:
    """pip's key normalization: `index_url`, `INDEX-URL` and `--index-url` are one key."""
    return name.strip().lower().replace("_", "-").removeprefix("--")


def read_file_settings(files: list[tuple[Path, str]]) -> tuple[dict[str, Setting], list[Setting], list[Path]]:
    """Merge the files as pip does: per `section.key`, later files win; then [install] over [global]."""
    merged: dict[tuple[str, str], Setting] = {}
    read: list[Path] = []
    for path, prefix in files:
        if not path.is_file():
            continue
        parser = configparser.RawConfigParser()
        try:
            parser.read(path, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue  # pip would refuse this file too; the build just does without it
        read.append(path)
        for section in parser.sections():
            for name, value in parser.items(section):
                key = _normalize(name)
                merged[(section, key)] = Setting(key, value.strip(), f"{prefix}{path} [{section}]")
    taken: dict[str, Setting] = {}
    for section in SECTIONS:
        for (sec, key), setting in merged.items():
            if sec == section and key in TAKEN_KEYS:
                taken[key] = setting
    others = [s for (sec, key), s in merged.items() if sec in SECTIONS and key not in TAKEN_KEYS]
    return taken, others, read


def mask(url: str) -> str:
    """The URL with its password (or a lone token) replaced by ****: safe to print and log."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, host = parts.netloc.rsplit("@", 1)
    user, sep, _password = userinfo.partition(":")
    shown = f"{user}:****" if sep else "****"
    return urlunsplit(parts._replace(netloc=f"{shown}@{host}"))


def unusable_url(url: str) -> str | None:
    """Why the build container could not reach this index, or None."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "a local path is not visible inside the build; fix: --wheelhouse DIR with the wheels"
    if (parts.hostname or "") in LOOPBACK_HOSTS:
        return (
            "localhost inside the build is the build container itself; fix: --index-url with the "
            "host's address on the Docker network (e.g. http://172.17.0.1:PORT/simple)"
        )
    return None


def unusable_cert(path: str) -> str | None:
    """Why this cert cannot be the build's extra CA bundle, or None."""
    file = Path(path)
    if not file.is_file():
        return "not a file (a directory of certificates is not supported); fix: --extra-ca-cert BUNDLE.pem"
    try:
        if b"-----BEGIN CERTIFICATE-----" not in file.read_bytes():
            return "holds no PEM certificate; fix: --extra-ca-cert with a PEM bundle"
    except OSError as exc:
        return f"unreadable ({exc.strerror}); fix: --extra-ca-cert with a readable PEM bundle"
    return None


def resolve(
    env: Mapping[str, str],
    *,
    files: list[tuple[Path, str]] | None = None,
    explicit: frozenset[str] = frozenset(),
) -> HostPipSettings:
    """The host's index URL(s) and CA for the build. `explicit`: keys a flag already set (they win)."""
    files = config_files(env) if files is None else files
    chosen, others, read = read_file_settings(files)
    for var, key in ENV_KEYS.items():
        if var in env:
            chosen[key] = Setting(key, env[var].strip(), f"env {var}")
    if "cert" not in chosen or not chosen["cert"].value:
        for var in CA_ENV_FALLBACKS:
            if env.get(var):
                chosen["cert"] = Setting("cert", env[var].strip(), f"env {var}")
                break
    skipped: list[Skipped] = []
    index_url: Setting | None = None
    extras: list[Setting] = []
    cert: Setting | None = None
    for key, setting in chosen.items():
        if not setting.value:
            continue  # set to nothing: pip's way to switch a lower file's value off
        if key in explicit:
            skipped.append(Skipped(setting, f"--{key if key != 'cert' else 'extra-ca-cert'} given"))
            continue
        if key == "cert":
            reason = unusable_cert(setting.value)
            if reason:
                skipped.append(Skipped(setting, reason))
            else:
                cert = setting
        elif key == "index-url":
            reason = unusable_url(setting.value)
            if reason:
                skipped.append(Skipped(setting, reason))
            else:
                index_url = setting
        else:
            for url in setting.value.split():
                one = Setting(key, url, setting.source)
                reason = unusable_url(url)
                if reason:
                    skipped.append(Skipped(one, reason))
                else:
                    extras.append(one)
    return HostPipSettings(index_url, tuple(extras), cert, tuple(skipped), tuple(others), tuple(read))


def describe(settings: HostPipSettings) -> list[str]:
    """Lines for the console: what was taken and from where, what not and why; credentials masked."""
    lines = []
    for s in settings.taken():
        lines.append(f"  {s.key:<16} {mask(s.value)}  (from {s.source})")
    for k in settings.skipped:
        s = k.setting
        lines.append(f"  skipped {s.key} {mask(s.value)} (from {s.source}): {k.reason}")
    if settings.other_keys:
        names = ", ".join(f"{s.key} ({s.source})" for s in settings.other_keys)
        lines.append(f"  not taken: {names}: only index-url, extra-index-url and cert reach the build")
    if not lines:
        return []
    head = "host pip settings for the build (--no-host-pip-config: ignore them):"
    return [head, *lines]
