"""`python -m images build|push|verify`: build a matrix line through the Docker Engine API, push, verify.

Builds go through docker-py's low-level APIClient (the classic builder, which every engine has) with our own
context tarball, so build-only inputs (extra CA, wheelhouse) reach the builder stage without touching the
working tree. An image is built under a unique temporary tag and only re-tagged to the short and full tags
on success: a failed build never leaves `pytorch-cuda:v2.8` pointing at something half-built.

The venv is installed in place in the deps stage, as the committed Dockerfile says. A build given an extra CA
(--extra-ca-cert or the host's pip cert), a wheelhouse or an index URL with a credential installs it in a
builder stage instead and copies only the venv on (the same template's variant, sent in the context), so none
of them reaches a layer or the image history; that copy costs about 100 s on 2 cores. An http:// index is
passed to pip as a trusted host: every sha256 is required, so a mirror cannot change what is installed.

A devel image of a CUDA 12 line (nvcc from Debian, the runtime lock) is built on the line's runtime deps
image, which is built first when it is not current: the venv is built and stored once for both flavors.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import docker
from docker.errors import APIError
from rich.console import Console

from images import registry, run_verify
from images.context import ContextError, ContextInputs, build_context
from images.dockerfile import (
    REPO_ROOT,
    dockerfile_name,
    dockerfile_path,
    lock_name,
    package_flavor,
    render_dockerfile,
)
from images.engine import EngineError, api_client, deps_ref, engine_errors, image_refs, platform_suffix
from images.lock import lock_problems
from images.matrix import FLAVORS, IMAGE_NAME, PLATFORMS, ImageLine, Matrix, MatrixError, load_matrix
from images.pipconfig import HostPipSettings, describe, resolve
from images.progress import StreamOutcome, failure_report, follow_build, log_group, plain_output

LOG_DIR = REPO_ROOT / "build" / "logs"


class BuildError(RuntimeError):
    """The build ran and failed; the message is the failure report."""


@dataclass(frozen=True)
class BuildRequest:
    tag: str
    flavor: str = "runtime"
    base_image: str | None = None
    index_url: str | None = None
    extra_index_url: str | None = None
    wheelhouse: Path | None = None
    extra_ca: Path | None = None
    no_cache: bool = False
    deps_image: str | None = None  # a pushed deps image to reuse when its key matches (CI's layer cache)
    uid: int = 1000
    gid: int = 1000
    extra_labels: dict[str, str] = field(default_factory=dict)
    platform: str | None = None  # a Docker platform of the line (default: its first, linux/amd64)


@dataclass(frozen=True)
class BuildResult:
    image_id: str
    tags: tuple[str, ...]
    log_path: Path
    seconds: float
    outcome: StreamOutcome  # the final stage's build
    deps_outcome: StreamOutcome | None = None  # the deps image's build; None when it was current
    removed: tuple[str, ...] = ()  # images this build made obsolete and removed (short ids)


def git_revision(root: Path = REPO_ROOT) -> str:
    """The commit the image is built from (OCI `revision`); `-dirty` when the tree has local changes."""
    try:
        sha = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{sha}-dirty" if dirty else sha


def isolated_install_reasons(request: BuildRequest) -> list[str]:
    """Why this build installs the venv in a builder stage rather than in place (empty: in place).

    An extra CA, a wheelhouse and an index credential must reach no layer and no history entry: a build arg
    is written into the history of every RUN after it, a COPY is a layer. The builder stage sees them and
    only its venv is copied on. Without them (most builds) the venv is installed in place and the 7 GB copy
    is saved.
    """
    reasons = []
    if request.extra_ca is not None:
        reasons.append("an extra CA bundle")
    if request.wheelhouse is not None:
        reasons.append("a wheelhouse")
    for option, url in (("--index-url", request.index_url), ("--extra-index-url", request.extra_index_url)):
        if url and urlsplit(url).password is not None:
            reasons.append(f"a credential in {option}")
    return reasons


def trusted_hosts(request: BuildRequest) -> str:
    """The hosts of http:// indexes, for pip's --trusted-host (build arg TRUSTED_HOST).

    pip ignores a plain-http index unless told to trust it; the user named it, and with every wheel's
    sha256 required a mirror cannot change what is installed, so it is trusted as named.
    """
    hosts = []
    for url in (request.index_url, request.extra_index_url):
        parts = urlsplit(url or "")
        if parts.scheme == "http" and parts.hostname:
            host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname
            if host not in hosts:
                hosts.append(host)
    return " ".join(hosts)


def check_dockerfile_current(line: ImageLine, flavor: str, root: Path = REPO_ROOT) -> Path:
    """Refuse to build a Dockerfile that no longer matches the matrix: the image would lie in its labels."""
    path = dockerfile_path(line, flavor, root / "images")
    if not path.is_file() or path.read_text() != render_dockerfile(line, flavor):
        raise MatrixError(
            f"{path.relative_to(root)} is missing or stale for {line.tag} ({flavor}); fix: make dockerfiles"
        )
    return path


DEPS_BEGIN = "# --- begin deps ---"
DEPS_END = "# --- end deps ---"
# The deps image carries the key of its inputs as a label: whether it is current is read off the image itself,
# locally or after pulling a pushed one (CI), never from a side file that could disagree with the engine.
DEPS_KEY_LABEL = "org.pytorch-cuda.deps-key"


def app_dockerfile(text: str, deps_image: str) -> str:
    """The same Dockerfile with its builder and deps stages replaced by the already-built deps image.

    The classic builder evaluates every stage and hashes the whole 7 GB venv for the cache lookup of its
    `COPY --from` (about 30 s here) even when nothing changed; starting from the deps image skips that and
    the builder stage altogether (no CA, no index needed), and the project and final stages' instructions
    stay exactly those of the committed Dockerfile.
    """
    return _from_image(
        text, DEPS_END, f"FROM {deps_image} AS deps", f"one '{DEPS_BEGIN}' ... '{DEPS_END}' block"
    )


def _from_image(text: str, until: str, from_line: str, lacks: str) -> str:
    """The Dockerfile with its lines from DEPS_BEGIN up to the line `until` replaced by `from_line`."""
    if text.count(DEPS_BEGIN + "\n") != 1 or text.count(until + "\n") != 1:
        raise MatrixError(f"the Dockerfile lacks {lacks}; fix: make dockerfiles")
    head, rest = text.split(DEPS_BEGIN + "\n", 1)
    _, tail = rest.split(until + "\n", 1)
    return f"{head}{DEPS_BEGIN}\n{from_line}\n{until}\n{tail}"


def deps_key(
    dockerfile_text: str, lock: bytes, buildargs: dict[str, str], inputs: ContextInputs, base_id: str
) -> str:
    """Everything the builder and deps stages depend on; the deps image is rebuilt when this changes."""
    digest = hashlib.sha256()
    for part in (
        dockerfile_text.split(DEPS_END)[0].encode(),
        lock,
        json.dumps(sorted(buildargs.items())).encode(),
        inputs.extra_ca.read_bytes() if inputs.extra_ca else b"",
        json.dumps(
            [(w.name, w.stat().st_size) for w in sorted(inputs.wheelhouse.glob("*.whl"))]
            if inputs.wheelhouse
            else []
        ).encode(),
        base_id.encode(),
    ):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()


def _deps_key_of(client: docker.APIClient, ref: str) -> str | None:
    try:
        labels = client.inspect_image(ref)["Config"].get("Labels") or {}
    except APIError:
        return None
    return labels.get(DEPS_KEY_LABEL)


def reuse_pushed_deps(client: docker.APIClient, remote: str, local: str, key: str, log: IO[str]) -> bool:
    """Pull a pushed deps image; tag it as the local deps image only if it was built from the same inputs."""
    repository, tag = remote.rsplit(":", 1)
    try:
        client.pull(repository, tag=tag)
    except APIError as exc:
        log.write(f"# {remote} could not be pulled ({exc.explanation or exc}); building the deps stage\n")
        return False
    if _deps_key_of(client, remote) != key:
        log.write(f"# {remote} was built from other inputs (deps key differs); building the deps stage\n")
        return False
    local_repository, local_tag = local.rsplit(":", 1)
    client.tag(remote, local_repository, local_tag, force=True)
    log.write(f"# phase 1 skipped: reused {remote} (same deps key)\n")
    return True


def _image_id(client: docker.APIClient, ref: str) -> str | None:
    try:
        return str(client.inspect_image(ref)["Id"])
    except APIError:
        return None


def _run_build(
    client: docker.APIClient,
    context_inputs: ContextInputs,
    log: IO[str],
    console: Console | None,
    title: str,
    **kwargs: object,
) -> StreamOutcome:
    context = build_context(context_inputs)
    try:
        with engine_errors(f"the build of {title}"):  # the engine gone, or refusing the build itself
            events = client.build(
                fileobj=context,
                custom_context=True,
                dockerfile=context_inputs.dockerfile,
                rm=True,
                forcerm=True,  # remove intermediate containers of failed steps too
                pull=False,  # the base may exist only locally (docker import)
                decode=True,
                **kwargs,
            )
            return follow_build(events, log, console=console, title=title)
    finally:
        context.close()


def build_image(
    request: BuildRequest,
    *,
    matrix: Matrix | None = None,
    client: docker.APIClient | None = None,
    console: Console | None = None,
    log_dir: Path = LOG_DIR,
    root: Path = REPO_ROOT,
) -> BuildResult:
    """Build one line x flavor; on success tag it short and full, on failure raise BuildError (no tag).

    Two engine builds: the deps stage as its own image (skipped while its inputs are unchanged), then the
    final stage on top of it. Plain `docker build -f images/<tag>/Dockerfile .` gives the same layers.
    """
    matrix = matrix or load_matrix()
    line = matrix.get(request.tag)
    if request.flavor not in line.flavors:
        raise MatrixError(
            f"--flavor: {request.flavor!r} is not built for {line.tag} (it has {', '.join(line.flavors)}); "
            f"fix: pick one of them"
        )
    platform = check_platform(line, request.platform)
    dockerfile_file = check_dockerfile_current(line, request.flavor, root)
    stale_lock = lock_problems(line, request.flavor, root / "images")
    if stale_lock:  # the image would install another package set than its labels and manifest say
        raise MatrixError(f"{'; '.join(stale_lock)}; fix: make lock")
    isolated = isolated_install_reasons(request)
    if isolated:  # the same template's builder-stage variant, sent in the context (never committed)
        dockerfile = f".build/{dockerfile_file.name}.isolated"
        text = render_dockerfile(line, request.flavor, isolated_install=True)
        inputs = ContextInputs(
            root, dockerfile, request.extra_ca, request.wheelhouse, extra_files=((dockerfile, text.encode()),)
        )
    else:
        dockerfile = dockerfile_file.relative_to(root).as_posix()
        text = dockerfile_file.read_text()
        inputs = ContextInputs(root, dockerfile)
    # The context first: a bad --extra-ca-cert or --wheelhouse is reported before any engine work.
    build_context(inputs).close()
    client = client or api_client()
    check_base_platform(client, request.base_image or line.base_image, platform)

    buildargs = {"UID": str(request.uid), "GID": str(request.gid)}
    labels = {
        "org.opencontainers.image.created": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "org.opencontainers.image.revision": git_revision(root),
        **request.extra_labels,
    }
    if request.base_image:
        buildargs["BASE_IMAGE"] = request.base_image
        labels["org.opencontainers.image.base.name"] = request.base_image
    if request.index_url:
        buildargs["INDEX_URL"] = request.index_url
    if request.extra_index_url:
        buildargs["EXTRA_INDEX_URL"] = request.extra_index_url
    if hosts := trusted_hosts(request):
        buildargs["TRUSTED_HOST"] = hosts

    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{line.tag}-{request.flavor}{platform_suffix(platform)}-{stamp}.log"
    local_deps = deps_ref(line, request.flavor, platform=platform)
    lock = (dockerfile_file.parent / lock_name(package_flavor(line, request.flavor))).read_bytes()
    base_id = _image_id(client, request.base_image or line.base_image) or "missing"
    short, full = image_refs(line, request.flavor, platform=platform)
    superseded = [i for i in (_image_id(client, ref) for ref in (short, full, local_deps)) if i]
    phase1 = _Phase1(client, request, line, log_path, console, base_id, platform)

    temp_ref = f"{IMAGE_NAME}-build:{uuid.uuid4().hex[:12]}"
    started = dt.datetime.now()
    with log_path.open("w") as log:
        log.write(
            f"# {IMAGE_NAME} {line.tag} {request.flavor} ({platform}): {dockerfile}, build args "
            f"{sorted(buildargs)}\n"
            + (
                f"# venv installed in a builder stage and copied on (the build has {', '.join(isolated)})\n"
                if isolated
                else "# venv installed in place (no extra CA, wheelhouse or index credential)\n"
            )
        )
        if shares_runtime_deps(line, request.flavor):
            # devel = the runtime deps image + the toolchain: the venv is built and stored once for both
            runtime_deps = deps_ref(line, "runtime", platform=platform)
            if isolated:
                runtime_name = f".build/{dockerfile_name('runtime')}.isolated"
                runtime_text = render_dockerfile(line, "runtime", isolated_install=True)
                runtime_inputs = replace(
                    inputs, dockerfile=runtime_name, extra_files=((runtime_name, runtime_text.encode()),)
                )
            else:
                runtime_file = dockerfile_path(line, "runtime", root / "images")
                runtime_text = runtime_file.read_text()
                runtime_inputs = replace(inputs, dockerfile=runtime_file.relative_to(root).as_posix())
            runtime_key = deps_key(runtime_text, lock, buildargs, runtime_inputs, base_id)
            phase1.ensure(
                runtime_inputs, runtime_deps, runtime_key, buildargs, log, "phase 0 (the runtime deps)"
            )
            devel_name = f".build/{dockerfile_file.name}.on-runtime-deps"
            devel_text = on_runtime_deps(text, runtime_deps)
            devel_inputs = ContextInputs(root, devel_name, extra_files=((devel_name, devel_text.encode()),))
            key = deps_key(devel_text, lock, {}, devel_inputs, _image_id(client, runtime_deps) or "missing")
            deps_outcome = phase1.ensure(devel_inputs, local_deps, key, {}, log, "phase 1", pushed=True)
        else:
            key = deps_key(text, lock, buildargs, inputs, base_id)
            deps_outcome = phase1.ensure(inputs, local_deps, key, buildargs, log, "phase 1", pushed=True)
        log.write(f"# phase 2: the project and final stages on {local_deps}\n")
        app_args = {
            k: v for k, v in buildargs.items() if k not in ("INDEX_URL", "EXTRA_INDEX_URL", "TRUSTED_HOST")
        }
        app_inputs = replace(
            inputs,
            extra_ca=None,  # the builder stage is not in this Dockerfile: no CA, no wheelhouse, no index
            wheelhouse=None,
            dockerfile=f".build/{dockerfile_file.name}",
            extra_files=(
                (
                    f".build/{dockerfile_file.name}",
                    app_dockerfile(dockerfile_file.read_text(), local_deps).encode(),
                ),
            ),
        )
        outcome = _run_build(
            client, app_inputs, log, console, f"{line.tag} {request.flavor}",
            tag=temp_ref, buildargs=app_args, labels=labels, nocache=request.no_cache, platform=platform,
        )  # fmt: skip
    seconds = (dt.datetime.now() - started).total_seconds()

    if not outcome.ok:
        _remove_quietly(client, temp_ref)
        raise BuildError(failure_report(outcome, log_path))
    with log_group(console, f"tag and clean up: {short}"):
        if console is not None and plain_output(console):
            console.file.write(f"tagging {short} and {full}; removing images this build made obsolete\n")
        with engine_errors(f"tagging the new image as {short} and {full}"):
            for ref in (short, full):
                repository, tag = ref.rsplit(":", 1)
                client.tag(temp_ref, repository, tag, force=True)
        _remove_quietly(client, temp_ref)  # drops only the temporary name; the image keeps its real tags
        # The project stage's image (only the source of `COPY --from=project`), then the images the tags
        # moved away from (the older final image first: it is the older deps image's child). The project
        # stage's image is a child of the deps image too: left behind, it would keep a replaced deps image
        # (7.5 GB) alive.
        with log_path.open("a") as log:
            removed = remove_unused_images(client, [*outcome.stage_ends, *superseded], log)
    return BuildResult(
        outcome.image_id or "", (short, full), log_path, seconds, outcome, deps_outcome, tuple(removed)
    )


RUNTIME_DEPS_STAGE = "FROM runtime-deps AS deps"


def check_platform(line: ImageLine, platform: str | None) -> str:
    """The platform to build: the line's first by default; one the line is not locked for is refused."""
    if platform is None:
        return line.platforms[0]
    if platform not in line.platforms:
        raise MatrixError(
            f"--platform: {line.tag} is built for {', '.join(line.platforms)}, not {platform!r}; fix: pick "
            f"one of them, or add {platform} to platforms of {line.tag} in images/matrix.toml (only where "
            "PyPI's torch wheels for it carry CUDA), then make lock"
        )
    return platform


def check_base_platform(client: docker.APIClient, base: str, platform: str) -> None:
    """A local base image of another architecture would make the engine try to pull (and fail, or worse,
    build on the wrong one): say so before any work, with the way out."""
    try:
        info = client.inspect_image(base)
    except APIError:
        return  # not here: the engine pulls it for the platform (or missing_base_report says how)
    have = f"{info.get('Os', 'linux')}/{info.get('Architecture', '?')}"
    if have != platform:
        raise BuildError(
            f"error: the base image {base} on this engine is {have}, and one local tag holds one "
            f"architecture; fix: give a {platform} base under its own name with --base-image REF "
            f"(scripts/make_base_image.sh --arch {platform.rsplit('/', 1)[1]} REF trixie makes one without a "
            "registry)"
        )


def shares_runtime_deps(line: ImageLine, flavor: str) -> bool:
    """A devel image that installs the runtime lock is built on the runtime deps image (see the template)."""
    return flavor != "runtime" and package_flavor(line, flavor) == "runtime"


def on_runtime_deps(text: str, runtime_deps_image: str) -> str:
    """The Dockerfile with every stage before the devel toolchain replaced by the runtime deps image."""
    return _from_image(
        text,
        RUNTIME_DEPS_STAGE,
        f"FROM {runtime_deps_image} AS runtime-deps",
        f"one '{RUNTIME_DEPS_STAGE}' in its deps block",
    )


@dataclass
class _Phase1:
    """Builds a deps image (target `deps`) unless the one tagged already carries the inputs' key."""

    client: docker.APIClient
    request: BuildRequest
    line: ImageLine
    log_path: Path
    console: Console | None
    base_id: str
    platform: str

    def ensure(
        self,
        inputs: ContextInputs,
        ref: str,
        key: str,
        buildargs: dict[str, str],
        log: IO[str],
        phase: str,
        *,
        pushed: bool = False,
    ) -> StreamOutcome | None:
        """The build's outcome, or None when `ref` was current (or pulled current: --deps-image)."""
        request = self.request
        current = not request.no_cache and _deps_key_of(self.client, ref) == key
        if not current and pushed and request.deps_image and not request.no_cache:
            current = reuse_pushed_deps(self.client, request.deps_image, ref, key, log)
        if current:
            log.write(f"# {phase} skipped: {ref} is current\n")
            return None
        log.write(f"# {phase}: the deps stage as {ref}\n")
        outcome = _run_build(
            self.client, inputs, log, self.console, f"{self.line.tag} {ref.rsplit(':', 1)[1]} deps",
            tag=ref, target="deps", buildargs=buildargs, nocache=request.no_cache,
            labels={DEPS_KEY_LABEL: key}, platform=self.platform,
        )  # fmt: skip
        if not outcome.ok:
            base = request.base_image or self.line.base_image
            if self.base_id == "missing" and _failed_at_from(outcome):
                raise BuildError(missing_base_report(base, outcome, self.log_path))
            raise BuildError(failure_report(outcome, self.log_path))
        # The builder stage's result was only the source of `COPY --from=builder`: a venv-sized image
        # (7.5 GB for v2.8) that no later build reads, since the next phase starts from the deps image.
        remove_unused_images(self.client, outcome.stage_ends, log)
        return outcome


def _failed_at_from(outcome: StreamOutcome) -> bool:
    step = outcome.failed_step
    return step is not None and step.instruction.upper().startswith("FROM ")


def missing_base_report(base: str, outcome: StreamOutcome, log_path: Path) -> str:
    """The base image was not on this engine and the builder could not pull it: name it and the ways out."""
    return (
        f"error: the base image {base} is not on this engine and could not be pulled ({outcome.error}); "
        f"fix: `docker pull {base}` where its registry is reachable (or `docker load`/`docker import` it; "
        "scripts/make_base_image.sh makes debian:trixie-slim without a registry), or build on another "
        f"base with --base-image REF\nfull log: {log_path}"
    )


def remove_unused_images(client: docker.APIClient, image_ids: list[str], log: IO[str]) -> list[str]:
    """Remove images a build made obsolete, each only while nothing uses it; returns the removed short ids.

    A rebuild otherwise leaves a venv-sized image behind every time (the old deps image, the builder stage),
    and the engine's disk fills up within a few rebuilds. An image that still has a tag, a container or a
    child image is kept: the engine refuses to remove it without force, and we never force.
    """
    removed = []
    for image_id in image_ids:
        try:
            info = client.inspect_image(image_id)
        except APIError:
            continue  # already gone (the same image listed twice, or removed with its child)
        short_id = str(info["Id"]).removeprefix("sha256:")[:12]
        if info.get("RepoTags"):
            continue  # still someone's image (or still current): not obsolete
        try:
            client.remove_image(info["Id"])
        except APIError as exc:
            log.write(f"# kept {short_id}: {exc.explanation or exc}\n")
            continue
        log.write(f"# removed {short_id}: obsolete after this build, nothing used it\n")
        removed.append(short_id)
    return removed


def _remove_quietly(client: docker.APIClient, ref: str) -> None:
    with contextlib.suppress(APIError):  # the name was never created (failed build)
        client.remove_image(ref, noprune=True)


# --- command line -----------------------------------------------------------------------------------------


def _request_from_args(args: argparse.Namespace) -> BuildRequest:
    return BuildRequest(
        tag=args.tag,
        flavor=args.flavor,
        base_image=args.base_image,
        index_url=args.index_url,
        extra_index_url=args.extra_index_url,
        wheelhouse=Path(args.wheelhouse) if args.wheelhouse else None,
        extra_ca=Path(args.extra_ca_cert) if args.extra_ca_cert else None,
        no_cache=args.no_cache,
        deps_image=args.deps_image,
        uid=args.uid,
        gid=args.gid,
        platform=args.platform,
    )


def request_from_cli(
    args: argparse.Namespace, env: Mapping[str, str] | None = None
) -> tuple[BuildRequest, HostPipSettings | None]:
    """The flags, completed by the host's pip index URL(s) and CA unless --no-host-pip-config.

    A flag wins over the host's value of the same key; see images/pipconfig.py for where pip looks.
    """
    request = _request_from_args(args)
    if getattr(args, "no_host_pip_config", False):
        return request, None
    flags = {"index-url": request.index_url, "extra-index-url": request.extra_index_url}
    host = resolve(
        os.environ if env is None else env,
        explicit=frozenset(k for k, v in {**flags, "cert": request.extra_ca}.items() if v),
    )
    request = replace(
        request,
        index_url=request.index_url or (host.index_url.value if host.index_url else None),
        extra_index_url=request.extra_index_url or host.extra_index_url,
        extra_ca=request.extra_ca or (Path(host.cert.value) if host.cert else None),
    )
    return request, host


def cmd_build(args: argparse.Namespace) -> int:
    console = Console(stderr=True)
    request, host = request_from_cli(args)
    for line in describe(host) if host else []:
        console.file.write(line + "\n")  # plain text: a URL or path must not be read as rich markup
    try:
        result = build_image(request, console=console)
    except ContextError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except BuildError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"built {result.image_id[:19]} in {result.seconds:.0f} s; tagged {' and '.join(result.tags)}")
    if result.removed:
        print(f"removed {len(result.removed)} image(s) this build made obsolete: {', '.join(result.removed)}")
    print(f"log: {result.log_path}")
    return 0


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tag", default="v2.8", help="matrix line, e.g. v2.8 (default: %(default)s)")
    parser.add_argument("--flavor", default="runtime", choices=FLAVORS, help="default: %(default)s")


def add_parsers(sub: argparse._SubParsersAction) -> None:
    build = sub.add_parser(
        "build",
        help="build pytorch-cuda:TAG through the Docker Engine API",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(build)
    build.add_argument("--base-image", help="override the line's base image (build arg BASE_IMAGE)")
    build.add_argument(
        "--platform", choices=PLATFORMS,
        help="build for this Docker platform, one the line lists in images/matrix.toml (default: "
        "linux/amd64; linux/arm64 runs under QEMU user emulation on an x86_64 host and is tagged TAG-arm64)",
    )  # fmt: skip
    build.add_argument("--index-url", help="package index for pip (a mirror; may carry credentials)")
    build.add_argument("--extra-index-url", help="additional package index for pip")
    build.add_argument("--wheelhouse", metavar="DIR", help="folder of .whl files pip may install from")
    build.add_argument(
        "--extra-ca-cert",
        metavar="FILE",
        help="PEM CA bundle trusted during the build only (TLS-inspecting proxies)",
    )
    build.add_argument(
        "--no-host-pip-config", action="store_true",
        help="do not take index-url, extra-index-url and cert from this host's pip configuration "
        "(pip.conf, PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_CERT, REQUESTS_CA_BUNDLE, SSL_CERT_FILE); "
        "the flags above win over it anyway",
    )  # fmt: skip
    build.add_argument("--no-cache", action="store_true", help="rebuild every layer")
    build.add_argument(
        "--deps-image", metavar="REF",
        help="a pushed deps image (make push pushes REGISTRY/pytorch-cuda-deps:TAG) to pull and reuse "
        "when it was built from the same inputs; CI's layer cache",
    )  # fmt: skip
    build.add_argument("--uid", type=int, default=1000, help="UID of the image's user (default: %(default)s)")
    build.add_argument("--gid", type=int, default=1000, help="GID of the image's user (default: %(default)s)")
    build.set_defaults(func=cmd_build)

    push = sub.add_parser("push", help="push the short and full tags of TAG to a registry")
    _add_common(push)
    push.add_argument("--registry", required=True, help="registry host[/namespace], e.g. ghcr.io/acme")
    push.add_argument(
        "--multi-platform",
        action="store_true",
        help="push every platform the line lists (each built with --platform) under TAG-amd64, TAG-arm64, "
        "then one multi-platform index under the short and full tags (docker pull picks the puller's "
        "platform)",
    )
    push.set_defaults(func=registry.cmd_push)

    verify = sub.add_parser("verify", help="run `verify run` inside the built image; report in reports/TAG/")
    _add_common(verify)
    verify.add_argument("--reports", default=str(REPO_ROOT / "reports"), help="default: %(default)s")
    run_verify.add_arguments(verify)  # --gpus auto|all|none
    verify.add_argument(
        "verify_args",
        nargs="*",
        metavar="ARG",
        help="extra arguments for `verify run` after --, e.g. -- --quick",
    )
    verify.set_defaults(func=run_verify.cmd_verify)
