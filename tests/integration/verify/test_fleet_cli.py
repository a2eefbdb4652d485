"""`verify fleet` as a user runs it: a real subprocess on node reports written to disk.

Reports are real ones perturbed (tests/unit/verify/fleet_synth.py), plus one written right here by a real
`verify run --quick`, so the fleet reads what the current code writes. The HTML is opened in headless
Chromium and the screenshot kept in build/fleet-html/ (look at it: it is the point of --html).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "build" / "fleet-html"
MERGE_BUDGET_S = 10.0  # 1,000 node reports, text + JSON + HTML, on the 2-core CI machine
HTML_BUDGET_BYTES = 5 * 2**20

_spec = importlib.util.spec_from_file_location("fleet_synth", REPO / "tests/unit/verify/fleet_synth.py")
assert _spec and _spec.loader
fs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fs)


def fleet(*args: str | Path, timeout: float = 120) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "verify", "fleet", *map(str, args)],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc, time.monotonic() - start


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr


@pytest.fixture(scope="module")
def fresh_cpu_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A report the current `verify run --quick` writes on this CPU host (cheap checks only)."""
    out = tmp_path_factory.mktemp("fresh") / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "verify",
            "run",
            "--quick",
            "--only",
            "env,driver,gpu,amp",
            "--json",
            str(out),
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_healthy_fleet_exits_0(tmp_path: Path) -> None:
    fs.healthy_fleet(tmp_path, 10)
    proc, _ = fleet(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "10 node(s), 0 flagged, 0 fleet-wide flag(s)" in proc.stdout
    assert "FLAG" not in proc.stdout


def test_fresh_cpu_reports_merge_and_pass(tmp_path: Path, fresh_cpu_report: Path) -> None:
    data = json.loads(fresh_cpu_report.read_text())
    for name in ("cpu-a", "cpu-b"):
        fs.write(data | {"node": name}, tmp_path / f"{name}.json")
    proc, _ = fleet(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "cpu-a" in proc.stdout and "cpu-b" in proc.stdout


def test_planted_slow_node_exits_1_naming_node_figure_value_median_gap(tmp_path: Path) -> None:
    paths = fs.healthy_fleet(tmp_path, 10)
    slow = fs.gpu_node("gpu004", scale={"bert": 0.8}, noise=0)
    fs.write(slow, paths[4])
    value = next(r for r in slow["results"] if r["name"] == "bert")["figures"]["samples_per_s"]
    proc, _ = fleet(tmp_path, "--json", tmp_path / "out" / "fleet.json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("FLAG")]
    assert line.startswith("FLAG slow: gpu004: bert ")
    assert f"{value:.1f} samples/s" in line and "% below the H200 SXM fleet median" in line
    out = json.loads((tmp_path / "out" / "fleet.json").read_text())
    (flag,) = out["flags"]
    assert flag["node"] == "gpu004" and flag["figure"] == "bert_samples_per_s" and flag["value"] == value
    assert f"{flag['median']:.1f} samples/s" in line and f"{flag['gap_pct']:.1f}% below" in line
    assert 17 < flag["gap_pct"] < 23
    assert out["exit_code"] == 1 and len(out["nodes"]) == 10


def test_failed_check_exits_1(tmp_path: Path) -> None:
    fs.healthy_fleet(tmp_path, 4)
    fs.write(fs.gpu_node("gpu002", fail="driver"), tmp_path / "gpu002.json")
    proc, _ = fleet(tmp_path)
    assert proc.returncode == 1
    assert "FLAG failed: gpu002: check driver FAILED: planted failure in driver" in proc.stdout
    assert "FAIL" in next(x for x in proc.stdout.splitlines() if x.startswith("gpu002"))


def test_mixed_torch_is_flagged(tmp_path: Path) -> None:
    fs.healthy_fleet(tmp_path, 4)
    fs.write(fs.gpu_node("gpu001", torch="2.10.0+cu130"), tmp_path / "gpu001.json")
    proc, _ = fleet(tmp_path)
    assert proc.returncode == 1
    assert "FLAG mixed_versions: mixed torch versions across the fleet" in proc.stdout


def test_a_node_that_sent_no_report_is_flagged_with_expect(tmp_path: Path) -> None:
    fs.healthy_fleet(tmp_path, 3)
    proc, _ = fleet(tmp_path, "--expect", "4")
    assert proc.returncode == 1, proc.stdout
    assert "FLAG node_count: 4 nodes expected, 3 reported: 1 node(s) sent no report" in proc.stdout, (
        proc.stdout
    )
    proc, _ = fleet(tmp_path, "--expect", "3")
    assert proc.returncode == 0, proc.stdout


def test_h200_and_h100_are_judged_apart(tmp_path: Path) -> None:
    for i in range(4):
        fs.write(fs.gpu_node(f"h200-{i}"), tmp_path / "h200" / f"{i}.json")
        fs.write(fs.gpu_node(f"h100-{i}", model="H100"), tmp_path / "h100" / f"{i}.json")
    proc, _ = fleet(tmp_path / "h200", tmp_path / "h100")
    assert proc.returncode == 0, proc.stdout
    assert "median H100 SXM bert" in proc.stdout and "median H200 SXM bert" in proc.stdout


def test_folders_and_files_mixed_other_json_named_and_skipped(tmp_path: Path) -> None:
    fs.write(fs.gpu_node("a"), tmp_path / "rack1" / "a.json")
    fs.write(fs.gpu_node("b"), tmp_path / "rack1" / "sub" / "b.json")
    fs.write({"schema": 1}, tmp_path / "rack1" / "manifest.json")
    c = fs.write(fs.gpu_node("c"), tmp_path / "c.json")
    proc, _ = fleet(tmp_path / "rack1", c)
    assert proc.returncode == 0, proc.stdout
    assert "3 node(s)" in proc.stdout
    assert f"note: {tmp_path / 'rack1' / 'manifest.json'}: JSON but not a verify report" in proc.stdout


@pytest.mark.parametrize(
    ("make", "expect"),
    [
        (lambda d: d / "missing.json", "missing.json: no such file or folder"),
        (lambda d: fs.write({"schema": 1}, d / "manifest.json"), "manifest.json: not a verify report"),
        (
            lambda d: (d / "cut.json").write_text('{"results": [') and d / "cut.json",
            "cut.json: not valid JSON",
        ),
        (lambda d: d, "no verify reports found"),
    ],
)
def test_bad_input_exits_2_and_names_it(tmp_path: Path, make, expect: str) -> None:
    proc, _ = fleet(make(tmp_path))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert expect in proc.stderr
    assert_no_traceback(proc)


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    fs.healthy_fleet(tmp_path / "r", 2)
    bad = (
        [],
        ["--tolerance", "-3", tmp_path / "r"],
        ["--html", tmp_path, tmp_path / "r"],
        ["--expect", "0", tmp_path],
    )
    for args in bad:
        proc, _ = fleet(*args)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert_no_traceback(proc)


def test_1000_nodes_merge_in_budget_and_html_stays_small(tmp_path: Path) -> None:
    import random

    rng = random.Random(7)
    for i in range(1000):
        model = "H100" if i % 4 == 0 else "H200"
        scale = {"bert": 0.75} if i in (17, 500) else None
        report = fs.gpu_node(f"node{i:04d}", rng=rng, model=model, scale=scale)
        fs.write(report, tmp_path / "reports" / f"rack{i // 50:02d}" / f"node{i:04d}.json")
    html = tmp_path / "fleet.html"
    proc, took = fleet(tmp_path / "reports", "--html", html, "--json", tmp_path / "fleet.json")
    assert proc.returncode == 1, proc.stderr
    flagged = {f["node"] for f in json.loads((tmp_path / "fleet.json").read_text())["flags"]}
    assert flagged == {"node0017", "node0500"}
    assert took < MERGE_BUDGET_S, f"1,000 reports took {took:.1f} s (budget {MERGE_BUDGET_S} s)"
    size = html.stat().st_size
    assert size < HTML_BUDGET_BYTES, f"HTML is {size / 2**20:.2f} MiB"
    text = html.read_text()
    assert "<script" not in text and "http://" not in text.replace("http://www.w3.org/2000/svg", "")
    assert "https://" not in text and "@import" not in text and "url(" not in text


# ---------------------------------------------------------------- the HTML in a real browser


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail("chromium is not installed; CI must install it (apt-get install -y chromium)")
    pytest.skip("chromium is not installed (apt-get install -y chromium); the HTML was not opened")


def png_pixels(path: Path) -> tuple[int, int, list[bytes]]:
    """(width, height, rows of RGB(A) bytes) of an 8-bit RGB/RGBA PNG, without PIL (not installed here)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8 and color in (2, 6), (depth, color)
            bpp = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytes(width * bpp)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = bytes(line)
    return width, height, [r[i : i + 3] for r in rows for i in range(0, stride, bpp)]


def test_html_opens_in_headless_chromium_and_shows_the_slow_node(tmp_path: Path) -> None:
    browser = chromium()
    rng = __import__("random").Random(5)
    for i in range(24):
        scale = {"bert": 0.8, "busbw": 0.6} if i == 9 else None
        fs.write(fs.gpu_node(f"gpu{i:02d}", rng=rng, scale=scale), tmp_path / "r" / f"gpu{i:02d}.json")
    for i in range(6):
        fs.write(fs.gpu_node(f"h100-{i}", rng=rng, model="H100"), tmp_path / "r" / f"h100-{i}.json")
    html = tmp_path / "fleet.html"
    proc, _ = fleet(tmp_path / "r", "--html", html)
    assert proc.returncode == 1 and html.is_file()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "fleet-screenshot.png"
    shot.unlink(missing_ok=True)
    shutil.copy(html, ARTIFACTS / "fleet.html")
    with tempfile.TemporaryDirectory() as profile:
        run = subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--screenshot={shot}",
                "--window-size=1400,2000",
                html.resolve().as_uri(),
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    width, height, pixels = png_pixels(shot)
    assert (width, height) == (1400, 2000)
    colors = set(pixels)
    assert len(colors) > 50, "the page rendered (nearly) blank"

    def near(p: bytes, rgb: tuple[int, int, int]) -> bool:
        return all(abs(a - b) <= 6 for a, b in zip(p, rgb, strict=True))

    red = sum(1 for p in pixels if near(p, (0xD3, 0x2F, 0x2F)))  # the flagged node's bar (solid fill)
    blue = sum(1 for p in pixels if near(p, (0x7A, 0x9C, 0xC6)))  # the healthy nodes' bars
    assert red > 200 and blue > 2000, (red, blue)
