"""Where a bert-base fine-tuning step's time goes on this GPU (issue 14's finding, docs/gpu-results.md).

    python scripts/profile_bert_step.py [--compile]

bert-base-chinese's shape (random weights), bf16 autocast, fused AdamW, on synthetic token ids, at four
(batch, sequence) shapes; forward only, forward + backward, and the whole step as finetune_bert.py runs it.
Per shape, one JSON line: wall ms per step (30 steps, synchronised), the ms the CPU took to enqueue them
(equal to wall where the CPU is the bottleneck), GPU kernel ms and kernels per step (torch.profiler, 5 steps).
--compile adds the whole step under torch.compile at two shapes, with the compile time.
"""

import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile
from transformers import BertConfig, BertForSequenceClassification

sys.path.insert(0, "examples")
import finetune_bert as fb

torch.manual_seed(0)
cfg = BertConfig(vocab_size=21128, num_labels=3, **fb.BASE_CONFIG)
model = BertForSequenceClassification(cfg).cuda()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)


def make(b, s):
    ids = torch.randint(5, 2000, (b, s), device="cuda")
    return {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "token_type_ids": torch.zeros_like(ids),
    }, torch.randint(0, 3, (b,), device="cuda")


def step(net, kind, x, y):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = net(**x).logits
    loss = F.cross_entropy(logits.float(), y)
    if kind == "fwd":
        return
    loss.backward()
    if kind == "full":
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    opt.zero_grad(set_to_none=True)


def measure(net, kind, b, s, steps=30):
    x, y = make(b, s)
    for _ in range(5):
        step(net, kind, x, y)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step(net, kind, x, y)
    t_enqueue = time.perf_counter() - t0
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t0) / steps * 1000
    with profile(activities=[ProfilerActivity.CUDA, ProfilerActivity.CPU]) as prof:
        for _ in range(5):
            step(net, kind, x, y)
        torch.cuda.synchronize()
    events = prof.key_averages()
    on_gpu = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]  # kernels, copies
    gpu_us = sum(e.self_device_time_total for e in on_gpu) / 5
    kernels = sum(e.count for e in on_gpu) / 5
    r = {
        "kind": kind,
        "batch": b,
        "seq": s,
        "wall_ms": round(wall, 2),
        "enqueue_ms": round(t_enqueue / steps * 1000, 2),
        "gpu_kernel_ms": round(gpu_us / 1000, 2),
        "kernels_per_step": round(kernels),
        "samples_per_s": round(b / wall * 1000, 1),
    }
    print(json.dumps(r), flush=True)
    return r


for kind in ("fwd", "fwdbwd", "full"):
    for b, s in ((32, 40), (128, 40), (32, 128), (256, 128)):
        measure(model, kind, b, s)

if "--compile" not in sys.argv[1:]:
    sys.exit(0)
t0 = time.perf_counter()
compiled = torch.compile(model)
try:
    r = measure(compiled, "full", 32, 40)
    print("compile+first measure s", round(time.perf_counter() - t0, 1), flush=True)
    measure(compiled, "full", 128, 40)
    print("compile total s", round(time.perf_counter() - t0, 1), flush=True)
except Exception as exc:
    print("compile failed", type(exc).__name__, str(exc)[:300])
