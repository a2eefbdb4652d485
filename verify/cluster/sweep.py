"""Which node or link makes the job-wide all-reduce slow or hang: a pairwise sweep, then bisection.

The search people do by hand when a cluster's all-reduce is slow, as rounds of all-reduces over groups of
nodes; the groups of one round are disjoint and run at the same time, so the sweep takes a handful of
rounds whatever the fleet's size (1,000 nodes: 4 rounds when one node is bad, 10 with each slow figure
timed twice more, log2(N) more for bisection):

  1. job      every node at once: the figure the sweep explains (skipped with 2 nodes: that is the pair).
  2. pairs    disjoint pairs (0,1), (2,3), ...; their 75th-percentile busbw is the reference (what a
              healthy link does here). A pair that fails, hangs or is more than --tolerance below the
              reference holds a bad node or a bad link.
  3. partners every node of a bad pair (and the odd node left out of the pairs) with a node from a good
              pair, and when slow, with a second one. Slow with every good partner: the node is bad. Slow
              with one only: the link to it is. Both nodes of a bad pair fine with good partners: the link
              between them is.
  4. bisect   only when the job-wide all-reduce is slow (or hung) and every pair is fine: split the slow
              group in halves and time both; recurse into a slow half. Both halves fine: the links between
              them (a switch uplink) carry the fault.

Up to ALL_PAIRS_MAX_NODES nodes (3 or 4), step 2 times every pair (round-robin, disjoint pairs per round)
and step 3 is not needed: one or two disjoint pairs cannot give a reference (a lone pair is its own, so a
node 10x slow passed; with a slow node in each of two pairs every pair was slow and the fabric was blamed).
There the fastest pair is the reference, a node slow (or hung) with every partner is bad, and a slow pair of
two nodes that are each fine with someone else is a bad link.

A figure that is slow is timed again (up to `retries` times, in rounds of their own) before it is judged,
and its best counts: a healthy pair slowed by a busy moment on one host (seen in CI: 0.017 GB/s against a
0.35 reference, beside a CPU hog) passes the second time, while a bad node or link is slow every time. A
trial that fails or hangs is not timed again: an error is the fault itself, and a hang would cost another
deadline.

A node whose `verify sweep` stops answering is named as dead or hung and left out of later rounds.
Pure: the rounds are planned and judged here, measured by verify.cluster.sweeprun (real all-reduces); the
unit tests drive this with model fabrics of up to 1,000 nodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

DEFAULT_TOLERANCE_PCT = 15.0  # a pair this far below the pairs' reference is slow
DEFAULT_SCALE_TOLERANCE_PCT = 30.0  # a group of 3+ nodes this far below it is slow
ALL_PAIRS_MAX_NODES = 4  # up to this many nodes every pair is timed (3 rounds at most)
DEFAULT_RETRIES = 2  # a slow figure is timed up to this many times more; the best counts


def round_robin(nodes: Sequence[int]) -> list[list[tuple[int, int]]]:
    """Every pair of `nodes` exactly once, in rounds of disjoint pairs (the circle method)."""
    ring: list[int | None] = list(nodes) + ([None] if len(nodes) % 2 else [])
    rounds = []
    for _ in range(len(ring) - 1):
        half = len(ring) // 2
        pairs = [(ring[i], ring[-1 - i]) for i in range(half)]
        rounds.append([(min(a, b), max(a, b)) for a, b in pairs if a is not None and b is not None])
        ring = [ring[0], ring[-1], *ring[1:-1]]
    return rounds


def halves(group: Sequence[int]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    return tuple(group[: len(group) // 2]), tuple(group[len(group) // 2 :])


@dataclass(frozen=True)
class Trial:
    """One all-reduce over `nodes` in one round; busbw None when it did not finish (error says why)."""

    round: int
    phase: str  # "job", "pair", "partner", "half"
    nodes: tuple[int, ...]
    busbw_GBps: float | None = None
    error: str = ""


@dataclass(frozen=True)
class Finding:
    kind: str  # "node", "link", "split", "fabric", "unresolved"
    nodes: tuple[int, ...]
    summary: str


@dataclass
class Sweep:
    """The sweep's state: call next_round() for the groups to time, record() their trials, until done."""

    nodes: Sequence[int]
    names: Mapping[int, str] = field(default_factory=dict)
    tolerance_pct: float = DEFAULT_TOLERANCE_PCT
    scale_tolerance_pct: float = DEFAULT_SCALE_TOLERANCE_PCT
    min_busbw_GBps: float = 0.0  # an absolute floor, for fleets too small for a reference (2 nodes)
    retries: int = DEFAULT_RETRIES
    trials: list[Trial] = field(default_factory=list)
    dead: dict[int, str] = field(default_factory=dict)  # node -> why it stopped answering
    _phase: str = ""
    _pending: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    _partner_queue: list[int] = field(default_factory=list)
    _tried: dict[int, list[int]] = field(default_factory=dict)  # suspect -> good partners timed with it
    _bisect_groups: list[tuple[int, ...]] = field(default_factory=list)
    _splits: list[Finding] = field(default_factory=list)
    _round: int = 0
    _pair_rounds: list[list[tuple[int, int]]] = field(default_factory=list)  # all-pairs rounds still to go
    _all_pairs: bool = False
    _unjudged: list[Trial] = field(default_factory=list)  # this step's trials, until none is left to retime
    _retiming: bool = False  # the pending round times slow groups again

    def __post_init__(self) -> None:
        self.nodes = sorted(set(self.nodes))
        if len(self.nodes) < 2:
            raise ValueError(f"a sweep needs at least 2 nodes, got {len(self.nodes)}")
        if self.retries < 0:
            raise ValueError(f"retries must be 0 or more, got {self.retries}")

    # ---- naming ------------------------------------------------------------------------------------------

    def name(self, node: int) -> str:
        host = self.names.get(node)
        return f"node {node} ({host})" if host else f"node {node}"

    def group_name(self, nodes: Sequence[int]) -> str:
        if len(nodes) > 6:
            return f"{len(nodes)} nodes {nodes[0]}..{nodes[-1]}"
        return "{" + ", ".join(str(n) for n in nodes) + "}"

    # ---- judging -----------------------------------------------------------------------------------------

    def timings(self, nodes: tuple[int, ...]) -> list[float]:
        """Every figure measured for this group of nodes (more than one when it was timed again)."""
        return [t.busbw_GBps for t in self.trials if t.nodes == nodes and t.busbw_GBps is not None]

    def distinct(self, phase: str) -> list[Trial]:
        """One trial per group timed in `phase`, the one with the best figure (a group timed again is judged
        on its best), in the order the groups were first timed."""
        best: dict[tuple[int, ...], Trial] = {}
        for t in self.trials:
            if t.phase != phase:
                continue
            kept = best.get(t.nodes)
            if kept is None or (t.busbw_GBps or -1.0) > (kept.busbw_GBps or -1.0):
                best[t.nodes] = t
        return list(best.values())

    def reference_GBps(self) -> float | None:
        """What a link between two healthy nodes does here: the pairs' 75th percentile (a median would be
        dragged down when half the pairs are slow)."""
        pairs = sorted(
            (t.busbw_GBps for t in self.distinct("pair") if t.busbw_GBps is not None), reverse=True
        )
        if self._all_pairs:  # a small fleet: two slow nodes of four leave one healthy pair of six
            return pairs[0] if pairs else None
        return pairs[len(pairs) // 4] if pairs else None

    def threshold_GBps(self, group_size: int) -> float:
        ref = self.reference_GBps() or 0.0
        tol = self.tolerance_pct if group_size <= 2 else self.scale_tolerance_pct
        return max(ref * (1 - tol / 100), self.min_busbw_GBps)

    def is_bad(self, trial: Trial) -> bool:
        """A trial that failed, or whose group's best figure is below the threshold."""
        if trial.busbw_GBps is None:
            return True
        return max(self.timings(trial.nodes)) < self.threshold_GBps(len(trial.nodes))

    def describe(self, trial: Trial) -> str:
        if trial.busbw_GBps is None:
            return trial.error or "did not finish"
        figures = self.timings(trial.nodes)
        if len(figures) > 1:
            return f"{max(figures):g} GB/s (best of {len(figures)} timings)"
        return f"{trial.busbw_GBps:g} GB/s"

    # ---- planning ----------------------------------------------------------------------------------------

    def alive(self) -> list[int]:
        return [n for n in self.nodes if n not in self.dead]

    def next_round(self) -> list[tuple[str, tuple[int, ...]]] | None:
        """The (phase, nodes) groups to time together next, or None when the sweep is done."""
        while not self._pending:
            if not self._advance():
                return None
        self._round += 1
        return list(self._pending)

    @property
    def round(self) -> int:
        return self._round

    @property
    def retiming(self) -> bool:
        """The round just planned times slow groups again."""
        return self._retiming

    def record(self, trials: Sequence[Trial], dead: Mapping[int, str] | None = None) -> None:
        """The measured trials of the round just planned, and the nodes that stopped answering in it."""
        self.trials.extend(trials)
        self.dead.update(dead or {})
        self._pending, self._retiming = [], False
        self._unjudged += trials
        if self._phase == "pairs" and self._pair_rounds:
            self._next_pair_round()  # all pairs: judged once the last round gives the reference
            if self._pending:
                return
        self._pending = self._retime_round()
        if self._pending:
            self._retiming = True
            return
        judged, self._unjudged = self._unjudged, []
        if self._phase == "partners":
            self._plan_partners(judged)
        elif self._phase == "bisect":
            self._judge_halves([t for t in judged if t.phase == "half"])

    def _retime_round(self) -> list[tuple[str, tuple[int, ...]]]:
        """The slow groups of this step that may be timed again, disjoint ones only (the others wait for
        the next retime round)."""
        planned: list[tuple[str, tuple[int, ...]]] = []
        busy: set[int] = set()
        for t in self._unjudged:
            if t.busbw_GBps is None or not self.is_bad(t) or set(t.nodes) & (busy | set(self.dead)):
                continue
            if self.threshold_GBps(len(t.nodes)) <= 0 or len(self.timings(t.nodes)) > self.retries:
                continue  # no reference yet, or timed enough
            planned.append((t.phase, t.nodes))
            busy |= set(t.nodes)
        return planned

    def _advance(self) -> bool:
        """Move to the next phase with work to do; False when none is left."""
        alive = self.alive()
        if self._phase == "":
            self._phase = "job"
            if len(alive) > 2:
                self._pending = [("job", tuple(alive))]
            return True
        if self._phase == "job":
            self._phase = "pairs"
            if 2 < len(alive) <= ALL_PAIRS_MAX_NODES:
                self._all_pairs, self._pair_rounds = True, round_robin(alive)
                self._next_pair_round()
            else:
                self._pending = [("pair", tuple(alive[i : i + 2])) for i in range(0, len(alive) - 1, 2)]
            return True
        if self._phase == "pairs" and self._all_pairs:
            self._phase = "partners"  # every pair is timed: no partner is left to try
            return True
        if self._phase == "pairs":
            self._phase = "partners"
            pairs = self.distinct("pair")
            paired = {n for t in pairs for n in t.nodes}
            self._partner_queue = [n for t in pairs if self.is_bad(t) for n in t.nodes]
            self._partner_queue += [n for n in alive if n not in paired]
            self._plan_partners()
            return True
        if self._phase == "partners":  # the job's figure is judged now that the reference is known
            self._phase = "job again"
            job = self._job()
            if job is not None and job.busbw_GBps is not None and self._bisect_needed():
                self._unjudged = [job]
                self._pending = self._retime_round()
                self._retiming = bool(self._pending)
            return True
        if self._phase == "job again":
            self._phase = "bisect"
            job = self._job()
            if job is not None and self._bisect_needed():
                self._bisect([job.nodes])
            return True
        return False

    def _job(self) -> Trial | None:
        jobs = self.distinct("job")
        return jobs[0] if jobs else None

    def _bisect_needed(self) -> bool:
        job = self._job()
        return job is not None and self.is_bad(job) and not self.findings() and bool(self.reference_GBps())

    def _next_pair_round(self) -> None:
        """The next round of the round-robin that has a pair of live nodes (dead nodes' pairs dropped)."""
        while self._pair_rounds and not self._pending:
            pairs = self._pair_rounds.pop(0)
            self._pending = [("pair", p) for p in pairs if p[0] not in self.dead and p[1] not in self.dead]

    def _good_partners(self) -> list[int]:
        good = [n for t in self.distinct("pair") if not self.is_bad(t) for n in t.nodes]
        return [n for n in good if n not in self.dead]

    def _plan_partners(self, judged: Sequence[Trial] = ()) -> None:
        """Each waiting suspect with a good node it has not been timed with, no good node twice in a round;
        a suspect slow with its first partner (`judged`: the partner trials just settled) waits for a second
        one, so a bad link to that partner is not taken for a bad node. More suspects than good nodes take
        more rounds."""
        good = self._good_partners()
        for t in judged:
            if t.phase == "partner" and self.is_bad(t):
                suspect = t.nodes[0]
                if (
                    len(self._tried.get(suspect, [])) == 1
                    and suspect not in self.dead
                    and suspect not in self._partner_queue
                ):
                    self._partner_queue.append(suspect)
        waiting, self._partner_queue, used = self._partner_queue, [], set()
        for suspect in waiting:
            if suspect in self.dead:
                continue
            tried = self._tried.setdefault(suspect, [])
            partner = next((g for g in good if g not in used and g not in tried and g != suspect), None)
            if partner is None:
                if not any(g not in tried and g != suspect for g in good):
                    continue  # no good node left to try: judged on what it has
                self._partner_queue.append(suspect)  # every good node is busy this round
                continue
            used.add(partner)
            tried.append(partner)
            self._pending.append(("partner", (suspect, partner)))

    def _bisect(self, groups: Sequence[tuple[int, ...]]) -> None:
        """Time both halves of each slow group next; a group too small to halve is left unresolved."""
        self._bisect_groups = []
        for group in groups:
            group = tuple(n for n in group if n not in self.dead)
            if len(group) < 4:  # a half of 1 node has no network to time
                self._splits.append(
                    Finding(
                        "unresolved",
                        group,
                        f"all-reduce over {self.group_name(group)} is slow though every pair in it is fine; "
                        "too few nodes to bisect further: run nccl-tests on these nodes by hand",
                    )
                )
                continue
            self._bisect_groups.append(group)
            self._pending += [("half", half) for half in halves(group)]

    def _judge_halves(self, trials: Sequence[Trial]) -> None:
        slow = {t.nodes for t in trials if self.is_bad(t)}
        next_groups: list[tuple[int, ...]] = []
        for group in self._bisect_groups:
            lower, upper = halves(group)
            bad = [h for h in (lower, upper) if h in slow]
            if not bad:
                self._splits.append(
                    Finding(
                        "split",
                        group,
                        f"all-reduce over {self.group_name(group)} is slow but both halves are fine: the "
                        f"links between {self.group_name(lower)} and {self.group_name(upper)} (e.g. a switch "
                        "uplink) carry the fault",
                    )
                )
            next_groups += bad
        self._bisect(next_groups)

    # ---- the verdict -------------------------------------------------------------------------------------

    def findings(self) -> list[Finding]:
        """What the trials so far show: dead nodes, bad nodes, bad links, and bisection's verdicts."""
        out = [
            Finding("node", (n,), f"{self.name(n)} stopped answering: {why}") for n, why in self.dead.items()
        ]
        pairs = self.distinct("pair")
        partners = self.distinct("partner")
        ref = self.reference_GBps()
        bad_pairs = [t for t in pairs if self.is_bad(t)]
        if pairs and not self._good_partners() and bad_pairs:
            if len(self.nodes) == 2:
                t = bad_pairs[0]
                out.append(
                    Finding(
                        "unresolved",
                        t.nodes,
                        f"the pair {self.group_name(t.nodes)}: {self.describe(t)}; with 2 nodes a bad node "
                        "and a bad link cannot be told apart: sweep again with a third node",
                    )
                )
            else:
                out.append(
                    Finding(
                        "fabric",
                        tuple(self.alive()),
                        f"every pair is slow or failed ({', '.join(self.describe(t) for t in pairs[:4])}"
                        f"{', ...' if len(pairs) > 4 else ''}): not one node but the fabric or the settings "
                        "(NCCL_SOCKET_IFNAME, NCCL_IB_HCA, a switch)",
                    )
                )
            return out + self._splits
        if self._all_pairs:
            return out + self._all_pairs_findings(pairs) + self._splits
        by_suspect: dict[int, list[Trial]] = {}
        for t in partners:
            by_suspect.setdefault(t.nodes[0], []).append(t)
        bad_nodes: list[int] = []
        for node, tried in by_suspect.items():
            slow = [t for t in tried if self.is_bad(t)]
            if node in self.dead or not slow:
                continue
            if len(slow) == len(tried):
                bad_nodes.append(node)
                out.append(
                    Finding(
                        "node",
                        (node,),
                        f"{self.name(node)} is slow with every good partner tried ("
                        + ", ".join(f"{self.name(t.nodes[1])}: {self.describe(t)}" for t in tried)
                        + f") vs the pairs' reference {ref or 0:g} GB/s",
                    )
                )
            else:
                for t in slow:
                    out.append(self._link(t, f"{self.name(node)} is fine with another good node"))
        for t in bad_pairs:
            a, b = t.nodes
            if a in self.dead or b in self.dead or a in bad_nodes or b in bad_nodes:
                continue
            if a in by_suspect and b in by_suspect:
                out.append(self._link(t, "each is fine with another node"))
        return out + self._splits

    def _all_pairs_findings(self, pairs: Sequence[Trial]) -> list[Finding]:
        """Every pair was timed: a node slow with every live partner is bad; a slow pair of two nodes that
        are each fine with another node is a bad link."""
        ref = self.reference_GBps() or 0.0
        alive = [n for n in self.nodes if n not in self.dead]
        mine = {n: [t for t in pairs if n in t.nodes and not set(t.nodes) & set(self.dead)] for n in alive}
        out: list[Finding] = []
        bad_nodes = [n for n, tried in mine.items() if tried and all(self.is_bad(t) for t in tried)]
        for n in bad_nodes:
            others = ", ".join(
                f"{self.name(next(m for m in t.nodes if m != n))}: {self.describe(t)}" for t in mine[n]
            )
            out.append(
                Finding(
                    "node",
                    (n,),
                    f"{self.name(n)} is slow with every other node ({others}) vs the fastest pair's "
                    f"{ref:g} GB/s",
                )
            )
        for t in pairs:
            if self.is_bad(t) and not set(t.nodes) & (set(bad_nodes) | set(self.dead)):
                out.append(self._link(t, "each is fine with another node"))
        return out

    def _link(self, t: Trial, why: str) -> Finding:
        a, b = t.nodes
        return Finding(
            "link",
            (min(a, b), max(a, b)),
            f"the link between {self.name(a)} and {self.name(b)}: {self.describe(t)} together (the pairs' "
            f"reference {self.reference_GBps() or 0:g} GB/s); {why}",
        )

    def verdict(self) -> str:
        found = self.findings()
        if found:
            return "; ".join(f.summary for f in found)
        job = self._job()
        ref = self.reference_GBps()
        pairs = len(self.distinct("pair"))
        text = (
            f"every pair within {self.tolerance_pct:g}% of the pairs' reference {ref or 0:g} GB/s "
            f"({pairs} pairs)"
        )
        if job is not None:
            text += f"; all {len(job.nodes)} nodes together {self.describe(job)}"
        return text

    def to_dict(self) -> dict[str, object]:
        return {
            "nodes": {str(n): self.names.get(n, "") for n in self.nodes},
            "tolerance_pct": self.tolerance_pct,
            "scale_tolerance_pct": self.scale_tolerance_pct,
            "min_busbw_GBps": self.min_busbw_GBps,
            "retries": self.retries,
            "reference_busbw_GBps": self.reference_GBps(),
            "rounds": self._round,
            "trials": [asdict(t) | {"slow": self.is_bad(t)} for t in self.trials],
            "dead": {str(n): why for n, why in self.dead.items()},
            "findings": [asdict(f) for f in self.findings()],
            "verdict": self.verdict(),
        }
