"""`verify fleet --html`: one self-contained HTML file (inline CSS and SVG, no scripts, fonts or CDNs), so it
can be mailed, attached to a ticket or opened on an air-gapped cluster.

Plots: per GPU model and figure, one bar per node (sorted, slowest first; flagged nodes red) against the fleet
median and the model's reference; and busbw against message size, one line per node. Size is linear in the
node count (about 1 KB per node per plot), so 1,000 nodes stay well under 5 MB.
"""

from __future__ import annotations

import math
from html import escape
from pathlib import Path

from verify.cluster.fleet import METRICS, Fleet, Median, NodeFacts, table_rows

W, H = 1100, 260
PAD_L, PAD_R, PAD_T, PAD_B = 70, 20, 20, 40
# Bar charts name each node under its bar, slanted 45 degrees so that neighbours never overlap: a 10 px font
# needs LABEL_PITCH px between baselines, and LABEL_CHARS characters (~6 px each) need ~60 px of height.
LABEL_PITCH, LABEL_CHARS = 12.0, 14
PAD_B_BARS = 90
H_BARS = H + PAD_B_BARS - PAD_B
CSS = """
body{font:14px/1.4 system-ui,-apple-system,'Segoe UI',sans-serif;margin:24px;color:#222;max-width:1200px}
h1{font-size:22px}h2{font-size:18px;margin-top:28px}h3{font-size:15px;margin:18px 0 4px}
.flags li{margin:4px 0}.flag{color:#b00020}.ok{color:#1b7f3b;font-weight:bold}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:2px 6px;text-align:left}
th{background:#f3f3f3;position:sticky;top:0}td.FAIL,td.bad{background:#fdd;color:#900;font-weight:bold}
td.warn{background:#fff5d6}.note{color:#666;font-size:12px}svg{background:#fafafa;border:1px solid #eee}
"""


def _num(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.3g}"


def bar_chart(model: str, metric: str, setting: str, fleet: Fleet, flagged: set[tuple[str, str]]) -> str:
    """One bar per node, sorted ascending, with the median (blue) and the reference (green) as lines."""
    members = sorted(
        (
            (n.metrics[metric].value, n.node)
            for n in fleet.nodes
            if n.model == model and metric in n.metrics and n.metrics[metric].setting == setting
        ),
    )
    med = fleet.median_for(model, metric, setting)
    if not members or med is None:
        return ""
    label, unit = METRICS[metric]
    # a figure that is 0 on every node (a dead link) still gets a scale: 0 would divide by zero
    top = (
        max([v for v, _ in members] + [med.median] + ([med.reference] if med.reference else [])) * 1.08 or 1.0
    )
    pw, ph = W - PAD_L - PAD_R, H_BARS - PAD_T - PAD_B_BARS
    step = min(pw / len(members), 48.0)  # a few nodes: bars, not slabs
    y = lambda v: PAD_T + ph * (1 - v / top)  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H_BARS}" role="img" '
        f'aria-label="{escape(label)}">'
    ]
    for i in range(5):
        v = top * i / 4
        parts.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e4e4e4"/>'
            f'<text x="{PAD_L - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{_num(v)}</text>'
        )
    for i, (v, node) in enumerate(members):
        color = "#d32f2f" if (node, metric) in flagged else "#7a9cc6"
        parts.append(
            f'<rect x="{PAD_L + i * step:.2f}" y="{y(v):.1f}" width="{max(step * 0.85, 0.6):.2f}" '
            f'height="{PAD_T + ph - y(v):.1f}" fill="{color}">'
            f"<title>{escape(node)}: {_num(v)} {unit}</title></rect>"
        )
        if step >= LABEL_PITCH:  # names slanted, one per bar; with more nodes than fit, hover the bars
            tx, ty = PAD_L + (i + 0.42) * step, H_BARS - PAD_B_BARS + 10
            parts.append(
                f'<text x="{tx:.1f}" y="{ty}" font-size="10" text-anchor="end" '
                f'transform="rotate(-45 {tx:.1f} {ty})">{escape(node[:LABEL_CHARS])}</text>'
            )
    lines = [(med.median, "#1f4fbf", f"fleet median {_num(med.median)}")]
    if med.reference:
        lines.append((med.reference, "#2e7d32", f"reference {_num(med.reference)}"))
    for (v, color, text), (tx, anchor) in zip(
        lines, ((W - PAD_R - 4, "end"), (PAD_L + 4, "start")), strict=False
    ):
        # median labelled on the right, reference on the left: close values must not print over each other
        parts.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="{color}" '
            f'stroke-width="2" stroke-dasharray="6 3"/><text x="{tx}" y="{y(v) - 4:.1f}" '
            f'font-size="11" text-anchor="{anchor}" fill="{color}" font-weight="bold">{escape(text)}</text>'
        )
    parts.append(
        f'<text x="{PAD_L}" y="{H_BARS - 8}" font-size="11">{len(members)} nodes, slowest first; red = more '
        f"than {fleet.tolerance_pct:g}% below the median; {unit}</text></svg>"
    )
    ref_note = (
        f'<div class="note">reference: {escape(med.reference_note)}</div>' if med.reference_note else ""
    )
    return f"<h3>{escape(model)}: {escape(label)} ({escape(setting)})</h3>{''.join(parts)}{ref_note}"


def busbw_chart(nodes: list[NodeFacts], model: str, flagged_nodes: set[str]) -> str:
    """busbw against message size (log2 x axis), one polyline per node; flagged nodes red and drawn last."""
    curves = [(n.node, n.busbw_curve) for n in nodes if n.model == model and len(n.busbw_curve) > 1]
    if not curves:
        return ""
    xs = [b for _, c in curves for b, _ in c]
    top = max(v for _, c in curves for _, v in c) * 1.08 or 1.0
    lo, hi = math.log2(min(xs)), math.log2(max(xs))
    span = (hi - lo) or 1.0
    pw, ph = W - PAD_L - PAD_R, H - PAD_T - PAD_B
    x = lambda b: PAD_L + pw * (math.log2(b) - lo) / span  # noqa: E731
    y = lambda v: PAD_T + ph * (1 - v / top)  # noqa: E731
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" aria-label="busbw">'
    ]
    for i in range(5):
        v = top * i / 4
        parts.append(
            f'<line x1="{PAD_L}" x2="{W - PAD_R}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e4e4e4"/>'
            f'<text x="{PAD_L - 6}" y="{y(v) + 4:.1f}" font-size="11" text-anchor="end">{_num(v)}</text>'
        )
    for b in sorted(set(xs)):
        size = f"{b // 2**30} GiB" if b >= 2**30 else f"{b // 2**20} MiB" if b >= 2**20 else f"{b} B"
        parts.append(
            f'<text x="{x(b):.1f}" y="{H - PAD_B + 14}" font-size="11" text-anchor="middle">{size}</text>'
        )
    curves.sort(key=lambda nc: nc[0] in flagged_nodes)
    for node, curve in curves:
        bad = node in flagged_nodes
        pts = " ".join(f"{x(b):.1f},{y(v):.1f}" for b, v in sorted(curve))
        parts.append(
            f'<polyline points="{pts}" fill="none" stroke="{"#d32f2f" if bad else "#7a9cc6"}" '
            f'stroke-width="{2 if bad else 1}" opacity="{1 if bad else 0.6}">'
            f"<title>{escape(node)}</title></polyline>"
        )
    parts.append(
        f'<text x="{PAD_L}" y="{H - 6}" font-size="11">all_reduce busbw (GB/s) against message size, '
        f"{len(curves)} nodes; red = a flagged node</text></svg>"
    )
    return f"<h3>{escape(model)}: all_reduce busbw by message size</h3>{''.join(parts)}"


def render_html(fleet: Fleet) -> str:
    flagged = {(f.node, f.figure) for f in fleet.flags if f.kind == "slow" and f.node and f.figure}
    flagged_nodes = {f.node for f in fleet.flags if f.node}
    out = [
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>verify fleet</title>',
        f"<style>{CSS}</style></head><body><h1>verify fleet: {len(fleet.nodes)} nodes</h1>",
    ]
    if fleet.flags:
        out.append(
            f'<p class="flag"><b>{len(flagged_nodes)} node(s) flagged, {len(fleet.flags)} flag(s)</b></p>'
            '<ul class="flags">'
        )
        out += [f'<li class="flag">{escape(f.kind)}: {escape(f.message)}</li>' for f in fleet.flags[:200]]
        if len(fleet.flags) > 200:
            out.append(f"<li>... and {len(fleet.flags) - 200} more (see the JSON)</li>")
        out.append("</ul>")
    else:
        out.append(
            f'<p class="ok">no node failed or is more than {fleet.tolerance_pct:g}% below its GPU '
            "model's median</p>"
        )
    out.append("<h2>Figures against the fleet median</h2>")
    order = list(METRICS)
    model_of = {n.node: n.model for n in fleet.nodes}
    slow = {(model_of.get(f.node or ""), f.figure) for f in fleet.flags if f.kind == "slow"}

    def chart_order(m: Median) -> tuple[bool, str, int, str]:  # charts with a flagged node first
        return ((m.model, m.metric) not in slow, m.model, order.index(m.metric), m.setting)

    for m in sorted(fleet.medians, key=chart_order):
        out.append(bar_chart(m.model, m.metric, m.setting, fleet, flagged))
    for model in sorted({n.model for n in fleet.nodes}):
        out.append(busbw_chart(fleet.nodes, model, flagged_nodes))
    header, rows = table_rows(fleet)
    out.append("<h2>Nodes</h2><table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>")
    for row in rows:
        cells = []
        for c in row:
            cls = "bad" if c.endswith("*") else c if c in ("FAIL", "warn") else ""
            cells.append(f'<td class="{cls}">{escape(c)}</td>' if cls else f"<td>{escape(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    if fleet.skipped:
        out.append(
            '<h2>Notes</h2><ul class="note">'
            + "".join(f"<li>{escape(s)}</li>" for s in fleet.skipped)
            + "</ul>"
        )
    out.append("</body></html>\n")
    return "\n".join(out)


def write_html(fleet: Fleet, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(fleet), encoding="utf-8")
