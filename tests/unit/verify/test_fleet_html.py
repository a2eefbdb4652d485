"""verify fleet --html's bar charts: a figure that is 0 on every node, and node names that stay readable."""

from __future__ import annotations

import itertools
import math
import re

import fleet_synth as fs
import pytest

from verify.cluster import fleet as fl
from verify.cluster.fleet_html import LABEL_PITCH, render_html


def _fleet(tmp_path, n: int, scale: dict[str, float] | None = None) -> fl.Fleet:
    paths = [fs.write(fs.gpu_node(f"node-{i:03d}", scale=scale), tmp_path / f"n{i}.json") for i in range(n)]
    loaded, problems = fl.load_reports(paths)
    assert not problems, problems
    return fl.judge([fl.node_facts(x) for x in loaded])


def test_a_figure_that_is_zero_on_every_node_still_renders(tmp_path):
    html = render_html(_fleet(tmp_path, 3, scale={"copy": 0.0}))  # raised ZeroDivisionError
    assert "<svg" in html and "nan" not in html.lower()


@pytest.mark.parametrize("n", [2, 4, 8, 40, 120])
def test_node_names_are_slanted_and_never_overlap(tmp_path, n):
    html = render_html(_fleet(tmp_path, n))
    chart = html.split("<svg", 2)[1]  # the first bar chart
    labels = re.findall(r'<text x="([\d.]+)" y="[\d.]+" font-size="10" text-anchor="end" '
                        r'transform="rotate\(-45 [\d.]+ [\d.]+\)">node-(\d+)</text>', chart)  # fmt: skip
    if n * LABEL_PITCH > 1010:  # more nodes than names fit: none printed (each bar's tooltip names it)
        assert labels == [] and chart.count("<title>node-") == n
        return
    assert len(labels) == n, chart[:2000]
    xs = sorted(float(x) for x, _ in labels)
    pitch = min(b - a for a, b in itertools.pairwise(xs))
    # rotated by 45 degrees, neighbouring baselines LABEL_PITCH apart are 8.5 px apart across the text
    assert pitch >= LABEL_PITCH and pitch * math.sin(math.pi / 4) >= 8, pitch
