"""`verify fleet`: merge many nodes' `verify run` reports and find the node that is broken or slow.

Three steps, kept apart so the rules are tested on data:
    load_reports  paths -> (LoadedReport list, skipped-file notes); raises FleetInputError (exit 2)
    node_facts    one report -> NodeFacts (identity, statuses, versions, comparable figures)
    judge         NodeFacts list -> Fleet (medians per GPU model and setting, flags)

Comparability: a figure is compared only with the same figure from nodes of the SAME GPU model
(verify/specs.py model, so an H100 is never judged against H200s) measured in the SAME setting (the
`setting` key: matmul_n for TFLOP/s, copy bytes for GB/s, the whole bert config for samples/s, backend +
ranks + largest message size + iterations for busbw). Figures from shrunk runs are left out: a gpu check
that reduced its work for lack of memory (`work_reduced`), a bert run whose batch was cut (out of memory),
a one-rank all-reduce (busbw is 0 by definition); a --quick run has other sizes, so its own setting.
CPU nodes have no judged figures (on shared CPUs they measure the neighbours, not the node).
"""

from __future__ import annotations

import json
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from verify import reference, specs
from verify.report import TOOL_NAME

DEFAULT_TOLERANCE_PCT = 10.0
FLEET_SCHEMA_VERSION = 1
EXIT_OK, EXIT_FLAGGED, EXIT_USAGE = 0, 1, 2
CPU_MODEL = "CPU"

# metric name -> (label, unit); the order is the table's
METRICS: dict[str, tuple[str, str]] = {
    "bf16_tflops": ("matmul bf16", "TFLOP/s"),
    "copy_GBps": ("memory copy", "GB/s"),
    "bert_samples_per_s": ("bert", "samples/s"),
    "busbw_GBps": ("all_reduce busbw", "GB/s"),
}
VERSION_KEYS = ("driver", "cuda", "torch")


class FleetInputError(Exception):
    """A path that cannot be read as reports (missing, unreadable, not JSON, not a verify report); exit 2."""


@dataclass(frozen=True)
class LoadedReport:
    path: Path
    data: dict[str, Any]


@dataclass(frozen=True)
class Metric:
    value: float
    setting: str  # figures are compared only between equal settings (and equal GPU models)


@dataclass
class NodeFacts:
    node: str
    source: str
    model: str  # verify/specs.py model ("H200 SXM"), the raw device name when unknown, or "CPU"
    statuses: dict[str, str]
    failed: dict[str, str]  # check -> summary
    versions: dict[str, str | None]
    metrics: dict[str, Metric]
    busbw_curve: list[tuple[int, float]]  # (bytes, busbw GB/s) per message size, for the plot
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)  # figures seen but not compared, and why
    started_at: str | None = None
    failed_gpus: list[dict[str, Any]] = field(default_factory=list)  # uuid, serial, check, reason


@dataclass(frozen=True)
class Flag:
    node: str | None  # None: a fleet-wide flag (mixed versions)
    kind: str  # "failed", "slow", "mixed_versions", "interrupted", "node_count", "gpu_repeat"
    message: str
    figure: str | None = None
    value: float | None = None
    median: float | None = None
    gap_pct: float | None = None


@dataclass(frozen=True)
class Median:
    model: str
    metric: str
    setting: str
    median: float
    nodes: int
    reference: float | None  # the model's reference for this figure and setting (datasheet or measured)
    reference_note: str


@dataclass
class Fleet:
    nodes: list[NodeFacts]
    medians: list[Median]
    flags: list[Flag]
    tolerance_pct: float
    skipped: list[str] = field(default_factory=list)
    jobs: list[NodeFacts] = field(default_factory=list)  # multi-node jobs' own reports (role "job")

    @property
    def exit_code(self) -> int:
        return EXIT_FLAGGED if self.flags else EXIT_OK

    def median_for(self, model: str, metric: str, setting: str) -> Median | None:
        for m in self.medians:
            if (m.model, m.metric, m.setting) == (model, metric, setting):
                return m
        return None

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": FLEET_SCHEMA_VERSION,
            "tool": {"name": TOOL_NAME, "command": "fleet"},
            "tolerance_pct": self.tolerance_pct,
            "nodes": [asdict(n) for n in self.nodes],
            "medians": [asdict(m) for m in self.medians],
            "flags": [asdict(f) for f in self.flags],
            "skipped": self.skipped,
            "jobs": [asdict(j) for j in self.jobs],
            "exit_code": self.exit_code,
        }


# ---------------------------------------------------------------- loading


def is_verify_report(data: Any) -> bool:
    return (
        isinstance(data, dict)
        and isinstance(data.get("tool"), dict)
        and data["tool"].get("name") == TOOL_NAME
        and isinstance(data.get("schema_version"), int)
        and isinstance(data.get("results"), list)
    )


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise FleetInputError(
            f"{path}: cannot read ({exc.strerror or exc}); fix: check the path and its permissions"
        ) from None
    except UnicodeDecodeError:
        raise FleetInputError(
            f"{path}: not UTF-8 text, so not a verify report; fix: remove it or name the reports"
        ) from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise FleetInputError(
            f"{path}: not valid JSON ({exc}); a report cut short by a node that died while writing it? "
            f"fix: rerun `verify run` on that node, or move the file away"
        ) from None


def load_reports(paths: Sequence[Path], allow_none: bool = False) -> tuple[list[LoadedReport], list[str]]:
    """Reports from files and folders (folders: every *.json below, recursively, in name order).

    A file named on the command line must be a verify report (else FleetInputError). In a folder, JSON
    that is not a verify report (a manifest, a fleet summary) is skipped and named in the notes; JSON that
    does not parse is an error, because a truncated report is a node we would otherwise silently lose.
    """
    if not paths:
        raise FleetInputError("no reports given; fix: verify fleet REPORT.json... or a folder of them")
    loaded: list[LoadedReport] = []
    skipped: list[str] = []
    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.json") if p.is_file())
            found = 0
            for file in files:
                if file.resolve() in seen:
                    continue
                data = _read_json(file)
                if not is_verify_report(data):
                    skipped.append(
                        f"{file}: JSON but not a verify report (no tool.name {TOOL_NAME!r}); skipped"
                    )
                    continue
                seen.add(file.resolve())
                loaded.append(LoadedReport(file, data))
                found += 1
            if not found:
                skipped.append(f"{path}: folder holds no verify report (*.json, searched recursively)")
        elif path.exists():
            data = _read_json(path)
            if not is_verify_report(data):
                raise FleetInputError(
                    f"{path}: not a verify report (no tool.name {TOOL_NAME!r}, schema_version and results); "
                    f"fix: give the JSON that `verify run --json FILE` wrote"
                )
            if path.resolve() not in seen:
                seen.add(path.resolve())
                loaded.append(LoadedReport(path, data))
        else:
            raise FleetInputError(f"{path}: no such file or folder")
    if not loaded and not allow_none:
        raise FleetInputError(
            "no verify reports found in " + ", ".join(map(str, paths)) + "; fix: point at the --report-dir "
            "or the JSON files `verify run --json` wrote"
        )
    return loaded, skipped


# ---------------------------------------------------------------- facts per node


def node_name(data: dict[str, Any]) -> str:
    """The report's own `node` (a string, or an object with name/hostname), else host.hostname."""
    node = data.get("node")
    if isinstance(node, str) and node:
        return node
    if isinstance(node, dict):
        for key in ("name", "hostname", "node_name"):
            if isinstance(node.get(key), str) and node[key]:
                return node[key]
    host = data.get("host")
    if isinstance(host, dict) and isinstance(host.get("hostname"), str) and host["hostname"]:
        return host["hostname"]
    return "unknown-host"


def _result(data: dict[str, Any], name: str) -> dict[str, Any]:
    for r in data.get("results", []):
        if isinstance(r, dict) and r.get("name") == name:
            return r
    return {}


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def gpu_model(data: dict[str, Any]) -> str:
    gpus = [g for g in data.get("gpus") or [] if isinstance(g, dict)]
    name = gpus[0].get("name") if gpus else None
    if not isinstance(name, str):
        name = _result(data, "gpu").get("figures", {}).get("name")
    if not isinstance(name, str) or not name:
        return CPU_MODEL
    mem = gpus[0].get("memory_total_MiB") if gpus else None
    spec = specs.lookup(name, int(mem) * 2**20 if isinstance(mem, int) else None) or specs.lookup(name)
    return spec.model if spec else name


def _gpu_metrics(gpu: dict[str, Any], out: dict[str, Metric], notes: list[str]) -> None:
    if gpu.get("status") not in ("pass", "warn"):
        return
    rows = [g for g in gpu.get("details", {}).get("gpus", []) if isinstance(g, dict)]
    if any(g.get("work_reduced") for g in rows):
        notes.append("gpu: work reduced for lack of memory (a shrunk run), figures not compared")
        return
    fig = gpu.get("figures", {})
    ns = {g.get("matmul_n") for g in rows}
    copies = {g.get("copy_bytes") for g in rows}
    bf16, copy = _num(fig.get("bf16_tflops")), _num(fig.get("copy_GBps"))
    if bf16 is not None and len(ns) == 1 and None not in ns:
        out["bf16_tflops"] = Metric(bf16, f"matmul_n {ns.pop()}")
    if copy is not None and len(copies) == 1 and None not in copies:
        out["copy_GBps"] = Metric(copy, f"copy {copies.pop() // 2**20} MiB")


def _bert_metric(bert: dict[str, Any], out: dict[str, Metric], notes: list[str]) -> None:
    if bert.get("status") not in ("pass", "warn"):
        return
    det = bert.get("details", {})
    cfg = det.get("config")
    value = _num(bert.get("figures", {}).get("samples_per_s"))
    if not isinstance(cfg, dict) or value is None:
        return
    if det.get("oom_notes") or cfg.get("batch") != det.get("requested_batch"):
        notes.append(f"bert: batch cut to {cfg.get('batch')} (memory), a shrunk run: not compared")
        return
    keys = ("size", "seq", "batch", "precision", "compile", "steps", "warmup", "repeats")
    setting = " ".join(f"{k} {cfg.get(k)}" for k in keys)
    out["bert_samples_per_s"] = Metric(value, setting)


def _nccl_metric(nccl: dict[str, Any]) -> tuple[Metric | None, list[tuple[int, float]]]:
    """The node's own all-reduce busbw. A node report of a multi-node job carries the job-wide figure in
    "rows" (every node's time averaged over all ranks: the same on every node, so it can flag none) and this
    node's own, timed within the node with all nodes at once, in "intra_rows": that one is the node's."""
    det = nccl.get("details", {})
    in_job = "intra_rows" in det
    rows = [r for r in det.get("intra_rows" if in_job else "rows", []) if isinstance(r, dict)]
    curve = [
        (int(r["bytes"]), float(r["busbw_GBps"]))
        for r in rows
        if _num(r.get("bytes")) is not None and _num(r.get("busbw_GBps")) is not None
    ]
    big = max(rows, key=lambda r: r.get("bytes", 0)) if rows else {}
    ranks = big.get("ranks") if in_job else nccl.get("figures", {}).get("ranks")
    if (
        nccl.get("status") != "pass"
        or det.get("backend") != "nccl"
        or not curve
        or not isinstance(ranks, int)
        or ranks < 2
    ):
        return None, curve if det.get("backend") == "nccl" else []
    where = "within the node, in a job, " if in_job else ""
    setting = f"nccl {where}{ranks} ranks {big.get('size', big['bytes'])} iters {big.get('iters')}"
    return Metric(float(big["busbw_GBps"]), setting), curve


UUID_IN_LABEL = re.compile(r"\((GPU-[0-9a-fA-F-]+)\)")


def _serial(value: Any) -> str | None:
    """A board serial as NVML gave it; None for "not supported" (NVML's answer on many boards) or absent."""
    return value if isinstance(value, str) and value.strip() and value != "not supported" else None


def failed_gpus(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The GPUs a report names as failed, by UUID: the driver check's per-GPU FAILs and the xid check's
    FAILs on a GPU NVML named. Reports from before these fields have none."""
    found = []
    driver = _result(data, "driver").get("details", {})
    for gpu in driver.get("gpus") or []:
        if isinstance(gpu, dict) and gpu.get("fails") and isinstance(gpu.get("uuid"), str):
            serial = _serial(gpu.get("serial"))
            found.append(
                {"uuid": gpu["uuid"], "serial": serial, "check": "driver", "reason": gpu["fails"][0]}
            )
    serials = {
        g.get("uuid"): _serial(g.get("serial")) for g in driver.get("gpus") or [] if isinstance(g, dict)
    }
    for event in _result(data, "xid").get("details", {}).get("failed_gpus") or []:
        match = UUID_IN_LABEL.search(str(event.get("gpu", "")))
        if match:
            uuid = match.group(1)
            serial = serials.get(uuid)
            found.append({"uuid": uuid, "serial": serial, "check": "xid", "reason": event.get("summary", "")})
    return found


def node_facts(loaded: LoadedReport) -> NodeFacts:
    """What `judge` needs from one report; anything missing is simply absent (old or partial reports)."""
    data = loaded.data
    results = [r for r in data.get("results", []) if isinstance(r, dict)]
    statuses = {str(r.get("name")): str(r.get("status")) for r in results}
    failed = {str(r.get("name")): str(r.get("summary", "")) for r in results if r.get("status") == "fail"}
    versions_in = data.get("versions") if isinstance(data.get("versions"), dict) else {}
    driver = _result(data, "driver").get("figures", {}).get("driver_version")
    versions = {
        "driver": driver if isinstance(driver, str) else None,
        "cuda": versions_in.get("cuda"),
        "torch": versions_in.get("torch"),
    }
    model = gpu_model(data)
    metrics: dict[str, Metric] = {}
    notes: list[str] = []
    curve: list[tuple[int, float]] = []
    if model != CPU_MODEL:
        _gpu_metrics(_result(data, "gpu"), metrics, notes)
        _bert_metric(_result(data, "bert"), metrics, notes)
        busbw, curve = _nccl_metric(_result(data, "nccl"))
        if busbw:
            metrics["busbw_GBps"] = busbw
    return NodeFacts(
        started_at=data.get("started_at") if isinstance(data.get("started_at"), str) else None,
        failed_gpus=failed_gpus(data),
        node=node_name(data),
        source=str(loaded.path),
        model=model,
        statuses=statuses,
        failed=failed,
        versions=versions,
        metrics=metrics,
        busbw_curve=curve,
        interrupted=bool(data.get("interrupted")),
        notes=notes,
    )


def unique_names(nodes: list[NodeFacts]) -> list[str]:
    """Make node names unique (a node reported twice): the second and later get '#2', '#3'; notes say so."""
    counts = Counter(n.node for n in nodes)
    seen: Counter[str] = Counter()
    notes = []
    for n in nodes:
        if counts[n.node] > 1:
            seen[n.node] += 1
            if seen[n.node] > 1:
                notes.append(
                    f"node {n.node} has {counts[n.node]} reports; "
                    f"{n.source} is shown as {n.node}#{seen[n.node]}"
                )
                n.node = f"{n.node}#{seen[n.node]}"
    return notes


# ---------------------------------------------------------------- judging


def _reference(model: str, metric: str, setting: str) -> tuple[float | None, str]:
    """The model's reference for this figure: the datasheet peak for matmul/copy, the measured bert figure."""
    spec = next((s for s in specs.SPECS if s.model == model), None)
    if metric == "bf16_tflops" and spec:
        return spec.bf16_tflops, f"{model} datasheet bf16 peak (dense)"
    if metric == "copy_GBps" and spec:
        return spec.mem_bw_gbps, f"{model} datasheet memory bandwidth"
    if metric == "bert_samples_per_s":
        words = setting.split()
        cfg = dict(zip(words[0::2], words[1::2], strict=False))
        try:
            ref = reference.lookup(
                model,
                cfg["size"],
                int(cfg["seq"]),
                int(cfg["batch"]),
                cfg["precision"],
                cfg["compile"] == "True",
            )
        except (KeyError, ValueError):
            ref = None
        if ref:
            return ref.samples_per_s, f"{model} bert reference ({ref.provenance()})"
    return None, ""


def _fmt(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.3g}"


def slow_flags(nodes: Sequence[NodeFacts], tolerance_pct: float) -> tuple[list[Median], list[Flag]]:
    """Per (GPU model, figure, setting): the median over nodes; a node more than tolerance below is flagged.

    At least two nodes must share the group, else there is nothing to compare with.
    """
    groups: dict[tuple[str, str, str], list[tuple[NodeFacts, float]]] = defaultdict(list)
    for n in nodes:
        for metric, m in n.metrics.items():
            groups[(n.model, metric, m.setting)].append((n, m.value))
    medians: list[Median] = []
    flags: list[Flag] = []
    order = list(METRICS)
    for (model, metric, setting), members in sorted(
        groups.items(), key=lambda kv: (kv[0][0], order.index(kv[0][1]), kv[0][2])
    ):
        median = statistics.median(v for _, v in members)
        ref, ref_note = _reference(model, metric, setting)
        medians.append(Median(model, metric, setting, median, len(members), ref, ref_note))
        if len(members) < 2 or median <= 0:
            continue
        label, unit = METRICS[metric]
        for n, value in members:
            gap = 100.0 * (1.0 - value / median)
            if gap > tolerance_pct:
                flags.append(
                    Flag(
                        n.node,
                        "slow",
                        f"{n.node}: {label} {_fmt(value)} {unit} is {gap:.1f}% below the {model} fleet "
                        f"median {_fmt(median)} {unit} ({len(members)} nodes, {setting}; "
                        f"> {tolerance_pct:g}% counts); "
                        f"fix: look at that node's clocks, throttling and PCIe/NVLink/NIC links "
                        f"(nvidia-smi -q -d CLOCK,PERFORMANCE,PCIE), then rerun `verify run` there",
                        metric,
                        value,
                        median,
                        round(gap, 2),
                    )
                )
    return medians, flags


def failure_flags(nodes: Sequence[NodeFacts]) -> list[Flag]:
    flags = []
    for n in nodes:
        for check, summary in n.failed.items():
            flags.append(
                Flag(
                    n.node,
                    "failed",
                    f"{n.node}: check {check} FAILED: {summary}; fix: see that report ({n.source}) and rerun "
                    f"`verify run --only {check}` on the node",
                    check,
                )
            )
        if n.interrupted:
            flags.append(
                Flag(
                    n.node,
                    "interrupted",
                    f"{n.node}: the run was interrupted ({n.source}); fix: rerun `verify run` there",
                )
            )
    return flags


def version_flags(nodes: Sequence[NodeFacts]) -> list[Flag]:
    """One fleet-wide flag per version (driver, CUDA, torch) that differs between nodes.

    Nodes that did not report a version (no driver on a CPU node) are not counted."""
    flags = []
    for key in VERSION_KEYS:
        by_version: dict[str, list[str]] = defaultdict(list)
        for n in nodes:
            v = n.versions.get(key)
            if v:
                by_version[str(v)].append(n.node)
        if len(by_version) < 2:
            continue
        ordered = sorted(by_version.items(), key=lambda kv: (-len(kv[1]), kv[0]))
        parts = []
        for version, names in ordered:
            shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
            parts.append(f"{version} on {len(names)} node(s) ({shown})")
        flags.append(
            Flag(
                None,
                "mixed_versions",
                f"mixed {key} versions across the fleet: "
                + "; ".join(parts)
                + f"; fix: put every node on one "
                f"{key} (the most common is {ordered[0][0]}) so results and jobs behave alike",
                key,
            )
        )
    return flags


ORDINALS = {2: "second", 3: "third", 4: "fourth", 5: "fifth"}


def history_flags(nodes: Sequence[NodeFacts]) -> list[Flag]:
    """A GPU (by UUID) that FAILed in two or more of the reports, whichever node reported it: a card that
    keeps coming back bad after resets and reboots should be replaced, not returned to service again."""
    seen: dict[str, list[tuple[str, NodeFacts, dict[str, Any]]]] = {}
    for n in nodes:
        for gpu in n.failed_gpus:
            seen.setdefault(gpu["uuid"], []).append((n.started_at or "", n, gpu))
    flags = []
    for uuid, fails in seen.items():
        runs = {id(n) for _, n, _ in fails}
        if len(runs) < 2:
            continue
        fails.sort(key=lambda item: item[0])
        first, last = fails[0], fails[-1]
        serial = next((g["serial"] for _, _, g in fails if g.get("serial")), None)
        count = ORDINALS.get(len(runs), f"{len(runs)}th")
        since = first[0][:10] or "an undated report"
        hosts = sorted({n.node.split("#")[0] for _, n, _ in fails})
        flags.append(
            Flag(
                last[1].node,
                "gpu_repeat",
                f"{count} FAIL of {uuid}{f' (serial {serial})' if serial else ''} since {since}, on "
                f"{', '.join(hosts)}; latest ({last[0][:16] or 'undated'}): {last[2]['check']}: "
                f"{last[2]['reason']}; fix: take it out of service and have it replaced (RMA)",
                last[2]["check"],
                float(len(runs)),
            )
        )
    return flags


def judge(
    nodes: list[NodeFacts],
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT,
    skipped: Iterable[str] = (),
    jobs: Sequence[NodeFacts] = (),
) -> Fleet:
    """Flags for nodes; a job's own report only adds its failures (its figures are the whole job's)."""
    medians, slow = slow_flags(nodes, tolerance_pct)
    flags = failure_flags([*nodes, *jobs]) + slow + version_flags(nodes) + history_flags(nodes)
    return Fleet(nodes, medians, flags, tolerance_pct, list(skipped), list(jobs))


def job_role(data: dict[str, Any]) -> str | None:
    """'job' for the report rank 0 writes for a whole multi-node job, 'node' for a node's own, else None."""
    job = data.get("job")
    role = job.get("role") if isinstance(job, dict) else None
    return role if isinstance(role, str) else None


def split_jobs(loaded: list[LoadedReport]) -> tuple[list[LoadedReport], list[LoadedReport]]:
    """(node reports, job reports). A job's report repeats rank 0's node, so it is not a node of its own;
    only when nothing but job reports is given (one report per single-node job) are they the nodes."""
    jobs = [r for r in loaded if job_role(r.data) == "job"]
    nodes = [r for r in loaded if job_role(r.data) != "job"]
    return (nodes, jobs) if nodes else (jobs, [])


@dataclass(frozen=True)
class Expected:
    """What the job had: a number of nodes, and their names where the scheduler gave them (--expect)."""

    count: int
    names: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> Expected:
        """'4', or 'node1,node2' (Slurm: `scontrol show hostnames $SLURM_JOB_NODELIST | paste -sd,`)."""
        if text.strip().isdigit():
            return cls(int(text))
        names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        return cls(len(names), names)


def _short(name: str) -> str:
    return name.split(".", 1)[0]


def count_flag(nodes: Sequence[NodeFacts], expected: Expected | None) -> Flag | None:
    """A fleet-wide flag when the reports do not cover the nodes the job had: a node that died or hung before
    writing its report is otherwise simply absent from a fleet of healthy-looking nodes. With the job's node
    names the missing ones are named."""
    reported = len(nodes)
    if expected is None:
        return None
    seen = {x.node for x in nodes} | {_short(x.node) for x in nodes}
    missing = [n for n in expected.names if n not in seen and _short(n) not in seen]
    count = expected.count
    if reported == count and not missing:
        return None
    if reported < count or missing:
        named = f": {', '.join(missing)}" if missing else ""
        return Flag(
            None,
            "node_count",
            f"{count} nodes expected, {reported} reported: {count - reported} node(s) sent no report{named} "
            "(died, hung or never started); fix: see the job's output for the missing node, rerun there",
        )
    return Flag(
        None,
        "node_count",
        f"{count} nodes expected, {reported} reported: reports of other runs are mixed in; fix: give "
        "`verify fleet` one run's reports (a report folder per job)",
    )


def merge(
    paths: Sequence[Path], tolerance_pct: float = DEFAULT_TOLERANCE_PCT, expect: Expected | int | None = None
) -> Fleet:
    """load + facts + judge: the whole of `verify fleet` without the output. expect: the job's nodes (or
    their number); with it, no report at all is a finding (every node missing), not an input error."""
    if isinstance(expect, int):
        expect = Expected(expect)
    loaded, skipped = load_reports(paths, allow_none=expect is not None)
    node_reports, job_reports = split_jobs(loaded)
    nodes = [node_facts(r) for r in node_reports]
    jobs = [node_facts(r) for r in job_reports]
    for job, report in zip(jobs, job_reports, strict=True):
        nnodes = report.data["job"].get("nnodes") or "?"
        job.node = f"job of {nnodes} nodes (rank 0 on {job.node})"
        skipped.append(
            f"{report.path}: the job's own report ({job.node}): its failures count, it is not a node"
        )
    skipped = skipped + unique_names(nodes)
    nodes.sort(key=lambda n: n.node)
    fleet = judge(nodes, tolerance_pct, skipped, jobs)
    flag = count_flag(nodes, expect)
    if flag:
        fleet.flags.insert(0, flag)
    return fleet


# ---------------------------------------------------------------- text output

STATUS_WORD = {"pass": "ok", "fail": "FAIL", "warn": "warn", "skip": "skip"}


def table_rows(fleet: Fleet) -> tuple[list[str], list[list[str]]]:
    """node x check statuses, the key figures and versions; '*' marks a flagged figure."""
    checks: list[str] = []
    everyone = [*fleet.nodes, *fleet.jobs]
    for n in everyone:
        for c in n.statuses:
            if c not in checks:
                checks.append(c)
    flagged = {(f.node, f.figure) for f in fleet.flags if f.kind == "slow"}
    header = ["node", "gpu", *checks, *(f"{METRICS[m][0]} {METRICS[m][1]}" for m in METRICS), *VERSION_KEYS]
    rows = []
    for n in everyone:
        cells = [n.node, n.model]
        cells += [STATUS_WORD.get(n.statuses.get(c, ""), "-") for c in checks]
        for m in METRICS:
            metric = n.metrics.get(m)
            cells.append(
                "-" if metric is None else _fmt(metric.value) + ("*" if (n.node, m) in flagged else "")
            )
        cells += [str(n.versions.get(k) or "-") for k in VERSION_KEYS]
        rows.append(cells)
    return header, rows


def render_text(fleet: Fleet) -> str:
    header, rows = table_rows(fleet)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()  # noqa: E731
    out = [line(header), line(["-" * w for w in widths])] + [line(r) for r in rows]
    out.append("")
    for m in fleet.medians:
        label, unit = METRICS[m.metric]
        ref = f"; reference {_fmt(m.reference)}" if m.reference else ""
        out.append(
            f"median {m.model} {label} ({m.setting}): {_fmt(m.median)} {unit} over {m.nodes} node(s){ref}"
        )
    for note in fleet.skipped:
        out.append(f"note: {note}")
    bad_nodes = {f.node for f in fleet.flags if f.node}
    if fleet.flags:
        out.append("")
        out += [f"FLAG {f.kind}: {f.message}" for f in fleet.flags]
    out.append("")
    fleet_wide = sum(1 for f in fleet.flags if f.node is None)
    out.append(
        f"{len(fleet.nodes)} node(s), {len(bad_nodes)} flagged, {fleet_wide} fleet-wide flag(s) "
        f"(tolerance {fleet.tolerance_pct:g}% below the median of the node's GPU model)"
    )
    return "\n".join(out)
