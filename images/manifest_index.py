"""A multi-platform image index: one tag that `docker pull` resolves to the image of the puller's platform.

The engine's classic image store holds one architecture per tag and docker-py has no `manifest create`, so
`python -m images push --multi-platform` pushes each platform's image under a tag of its own
(pytorch-cuda:v2.15-amd64, pytorch-cuda:v2.15-arm64), then writes the index itself through the registry's
HTTP API (Docker Registry v2, as the OCI distribution spec keeps it): GET each pushed manifest for its media
type and size, PUT a manifest list naming them with their platforms under the line's short and full tags.
Credentials are the engine's own (`docker login`: ~/.docker/config.json and its helpers); a registry that
answers 401 with a Bearer challenge gets the token dance every registry CLI does.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

import docker.auth
import requests

MANIFEST_TYPES = (
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
)
LIST_TYPE = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_INDEX_TYPE = "application/vnd.oci.image.index.v1+json"
CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


class RegistryIndexError(RuntimeError):
    """The registry refused a request; the message holds its status and words."""


@dataclass(frozen=True)
class PlatformImage:
    platform: str  # "linux/arm64"
    digest: str  # the pushed manifest's digest


def split_registry(registry: str) -> tuple[str, str]:
    """ "ghcr.io/acme" -> ("ghcr.io", "acme/"); "127.0.0.1:5000" -> ("127.0.0.1:5000", "")."""
    host, _, namespace = registry.partition("/")
    return host, f"{namespace}/" if namespace else ""


class RegistrySession:
    """HTTP to one repository of a registry, with the engine's credentials and Bearer tokens on demand."""

    def __init__(self, host: str, repository: str, timeout_s: float = 60.0) -> None:
        local = host.split(":")[0] in ("localhost", "127.0.0.1", "[::1]")
        self.base = f"{'http' if local else 'https'}://{host}"
        self.repository = repository
        self.timeout_s = timeout_s
        auth = docker.auth.resolve_authconfig(docker.auth.load_config(), host) or {}
        self.basic = (auth["username"], auth["password"]) if auth.get("username") else None
        self.token: str | None = None

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.base}/v2/{self.repository}/{path}"
        headers = dict(kwargs.pop("headers", {}))
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        answer = requests.request(method, url, headers=headers, timeout=self.timeout_s, **kwargs)
        challenge = answer.headers.get("WWW-Authenticate", "")
        if answer.status_code == 401 and challenge.lower().startswith("bearer") and not self.token:
            self.token = self._token(dict(CHALLENGE_RE.findall(challenge)))
            headers["Authorization"] = f"Bearer {self.token}"
            answer = requests.request(method, url, headers=headers, timeout=self.timeout_s, **kwargs)
        elif answer.status_code == 401 and self.basic:
            answer = requests.request(
                method, url, headers=headers, auth=self.basic, timeout=self.timeout_s, **kwargs
            )
        return answer

    def _token(self, challenge: dict[str, str]) -> str:
        params = {"service": challenge.get("service", ""), "scope": f"repository:{self.repository}:pull,push"}
        answer = requests.get(challenge["realm"], params=params, auth=self.basic, timeout=self.timeout_s)
        if answer.status_code != 200:
            raise RegistryIndexError(
                f"{challenge['realm']} refused a push token ({answer.status_code}: {answer.text[:200]}); "
                f"fix: docker login {self.base.split('//', 1)[1]}"
            )
        body = answer.json()
        return str(body.get("token") or body.get("access_token"))


def index_body(entries: list[dict[str, Any]]) -> bytes:
    return json.dumps(
        {"schemaVersion": 2, "mediaType": LIST_TYPE, "manifests": entries}, indent=2, sort_keys=True
    ).encode()


def push_index(registry: str, name: str, tags: list[str], images: list[PlatformImage]) -> str:
    """Write one manifest list naming `images` under every tag of `tags` in REGISTRY/NAME; its digest."""
    host, namespace = split_registry(registry)
    session = RegistrySession(host, f"{namespace}{name}")
    entries = []
    for image in images:
        answer = session.request(
            "GET", f"manifests/{image.digest}", headers={"Accept": ", ".join(MANIFEST_TYPES)}
        )
        if answer.status_code != 200:
            raise RegistryIndexError(
                f"{registry}/{name}@{image.digest}: the registry answered {answer.status_code} "
                f"({answer.text[:200]}); fix: push the {image.platform} image first"
            )
        media_type = answer.headers.get("Content-Type", MANIFEST_TYPES[0]).split(";")[0]
        os_name, arch = image.platform.split("/", 1)
        entries.append(
            {
                "mediaType": media_type,
                "size": len(answer.content),
                "digest": image.digest,
                "platform": {"architecture": arch, "os": os_name},
            }
        )
    body = index_body(entries)
    for tag in tags:
        answer = session.request("PUT", f"manifests/{tag}", data=body, headers={"Content-Type": LIST_TYPE})
        if answer.status_code not in (200, 201):
            raise RegistryIndexError(
                f"{registry}/{name}:{tag}: the registry refused the multi-platform index "
                f"({answer.status_code}: {answer.text[:300]})"
            )
    return "sha256:" + hashlib.sha256(body).hexdigest()
