"""The nccl check's collective path for real on gloo at 4 and 8 CPU processes: exact sums, and the
busbw/algbw ratio nccl-tests defines for all_reduce, 2(n-1)/n.

Two ranks cannot catch a wrong factor (2(n-1)/n is 1 there, so busbw == algbw whatever the formula);
at 4 and 8 the right factor is 1.5 and 1.75, while the usual mistakes (1, n, (n-1)/n, 2n/(n+1)) give
1 / 4 / 0.75 / 1.6 and 1 / 8 / 0.875 / 1.78, all outside the 0.2 % the figures' 4 significant digits allow.
"""

from __future__ import annotations

import pytest
import torch

from verify.checks import nccl
from verify.context import Context
from verify.result import Status

pytestmark = [
    pytest.mark.skipif(torch.cuda.is_available(), reason="the gloo path runs only without a GPU"),
    pytest.mark.timeout(300),
]

# Figures carry 4 significant digits (verify.cluster.distributed.significant): busbw/algbw is then within
# 2 x 5e-4 of the true ratio.
RATIO_REL = 2e-3


@pytest.mark.parametrize("n", [4, 8])
def test_gloo_ranks_report_busbw_as_2_n_minus_1_over_n_and_exact_sums(n):
    r = nccl.run(Context(quick=True, options={"nccl": {"gloo_ranks": n}}))

    # Any wrong sum on any rank, a crash or a hang would make this a FAIL naming it.
    assert r.status == Status.SKIP, r.summary
    assert f"gloo with {n} processes: sums correct at 3 sizes" in r.summary
    assert r.figures["ranks"] == n and r.details["launch"].startswith(f"{n} local processes")

    rows = r.details["rows"]
    assert [row["size"] for row in rows] == ["1MiB", "4MiB"]
    want = 2 * (n - 1) / n
    for row in rows:
        assert row["algbw_GBps"] > 0, row
        ratio = row["busbw_GBps"] / row["algbw_GBps"]
        assert ratio == pytest.approx(want, rel=RATIO_REL), (n, row)
        # algbw itself is bytes / time (GB = 1e9 B), from the same rounded figures.
        assert row["algbw_GBps"] == pytest.approx(row["bytes"] / (row["time_us"] * 1e3), rel=RATIO_REL)
        assert r.figures[f"gloo_busbw_GBps_{row['size']}"] == row["busbw_GBps"]


def test_one_gloo_rank_is_refused_with_the_fix_not_run():
    r = nccl.run(Context(quick=True, options={"nccl": {"gloo_ranks": 1}}))
    assert r.status == Status.FAIL
    assert r.summary == "gloo_ranks is 1; fix: give a whole number of processes >= 2 (default 2)"
