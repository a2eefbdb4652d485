"""A plain torch.distributed all_reduce loop to hold verify's nccl figures against (issue 7, item 5).

Independent of verify/: launch with torchrun, one process per GPU:
    python3 -m torch.distributed.run --nproc-per-node N scripts/gpu_allreduce_plain.py
Same sizes (1 MiB .. 1 GiB float32), 5 warm-up and 20 timed iterations, CUDA events around the timed loop,
time = mean per op of the slowest rank; algbw = bytes / time, busbw = algbw * 2(n-1)/n (nccl-tests).
Rank 0 prints one JSON line.
"""

import json
import os

import torch
import torch.distributed as dist

rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
dev = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
torch.cuda.set_device(dev)
dist.init_process_group("nccl", device_id=dev)
rows = []
for mib in (1, 4, 16, 64, 256, 1024):
    nbytes = mib << 20
    buf = torch.full((nbytes // 4,), 1.0 / world, device=dev)
    for _ in range(5):
        dist.all_reduce(buf)
    torch.cuda.synchronize()
    dist.barrier()
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(20):
        dist.all_reduce(buf)
    e.record()
    e.synchronize()
    t = torch.tensor([s.elapsed_time(e) / 1e3 / 20], dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    algbw = nbytes / t.item() / 1e9
    rows.append(
        {
            "size_MiB": mib,
            "time_us": round(t.item() * 1e6, 2),
            "algbw_GBps": round(algbw, 2),
            "busbw_GBps": round(algbw * 2 * (world - 1) / world, 2),
        }
    )
if rank == 0:
    print(json.dumps({"loop": "plain all_reduce", "ranks": world, "rows": rows}))
dist.destroy_process_group()
