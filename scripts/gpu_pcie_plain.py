"""A plain pinned-memory copy loop to hold a PCIe bandwidth figure against (issue 19).

Independent of verify/: `python3 scripts/gpu_pcie_plain.py [--mib 256] [--iters 20]` on a GPU host.
For each GPU: a pinned host buffer and a device buffer of --mib MiB, 3 warm-up copies, then --iters timed
copies each way between CUDA events; GB/s = bytes * iters / time (decimal GB, as nvbandwidth and
bandwidthTest report). Prints one JSON line per GPU with the PCIe link NVML reports beside it.
"""

import argparse
import json

import torch

try:
    import pynvml as nv
except ImportError:  # the figures stand without the link facts
    nv = None


def timed_copy(dst: torch.Tensor, src: torch.Tensor, iters: int) -> float:
    for _ in range(3):
        dst.copy_(src, non_blocking=True)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        dst.copy_(src, non_blocking=True)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def link(index: int) -> dict:
    if nv is None:
        return {}
    nv.nvmlInit()
    h = nv.nvmlDeviceGetHandleByIndex(index)
    return {
        "gen": nv.nvmlDeviceGetCurrPcieLinkGeneration(h),
        "gen_max": nv.nvmlDeviceGetMaxPcieLinkGeneration(h),
        "width": nv.nvmlDeviceGetCurrPcieLinkWidth(h),
        "width_max": nv.nvmlDeviceGetMaxPcieLinkWidth(h),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20)
    args = parser.parse_args()
    nbytes = args.mib << 20
    for index in range(torch.cuda.device_count()):
        with torch.cuda.device(index):
            host = torch.empty(nbytes, dtype=torch.uint8, pin_memory=True)
            dev = torch.empty(nbytes, dtype=torch.uint8, device=f"cuda:{index}")
            h2d = timed_copy(dev, host, args.iters)
            d2h = timed_copy(host, dev, args.iters)
        row = {
            "gpu": index,
            "mib": args.mib,
            "iters": args.iters,
            "h2d_gbps": round(nbytes * args.iters / h2d / 1e9, 2),
            "d2h_gbps": round(nbytes * args.iters / d2h / 1e9, 2),
            "link": link(index),
        }
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
