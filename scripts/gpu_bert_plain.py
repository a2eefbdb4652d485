"""The plain, hand-written BERT training loop that `verify bench bert` must match (issue 7, item 2).

Deliberately independent of verify/: BertForMaskedLM from a BertConfig (bert-base), SDPA attention, bf16
autocast, fused AdamW, the same 4 rotating random batches with 15 % masked labels, CUDA events around each
repeat of N steps. Prints one JSON line. Usage (on a GPU host):
    python3 scripts/gpu_bert_plain.py [--compile] [--steps 30] [--repeats 3] [--json FILE]
"""

import argparse
import gc
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import BertConfig, BertForMaskedLM

p = argparse.ArgumentParser()
p.add_argument("--compile", action="store_true")
p.add_argument("--steps", type=int, default=30)
p.add_argument("--warmup", type=int, default=10)
p.add_argument("--repeats", type=int, default=3)
p.add_argument("--batch", type=int, default=64)
p.add_argument("--seq", type=int, default=128)
p.add_argument("--json")
p.add_argument(
    "--no-gc", action="store_true", help="disable Python's GC in the timed region (noise experiment)"
)
args = p.parse_args()

model = BertForMaskedLM(BertConfig(attn_implementation="sdpa")).cuda().train()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
fwd = torch.compile(model) if args.compile else model
gen = torch.Generator().manual_seed(0)
batches = []
for _ in range(4):
    ids = torch.randint(0, model.config.vocab_size, (args.batch, args.seq), generator=gen)
    labels = torch.where(torch.rand(args.batch, args.seq, generator=gen) < 0.15, ids, -100)
    batches.append((ids.cuda(), labels.cuda()))


def step(ids, labels):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = fwd(input_ids=ids, labels=labels).loss
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


t0 = time.perf_counter()
step(*batches[0]).detach().item()
first_step_s = time.perf_counter() - t0
for i in range(1, args.warmup):
    step(*batches[i % 4])
torch.cuda.synchronize()
if args.no_gc:
    gc.collect()
    gc.disable()
sps = []
for _ in range(args.repeats):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for i in range(args.steps):
        loss = step(*batches[i % 4])
    end.record()
    end.synchronize()
    sps.append(args.batch * args.steps / (start.elapsed_time(end) / 1e3))
med = statistics.median(sps)
out = {
    "loop": "plain",
    "compile": args.compile,
    "no_gc": args.no_gc,
    "samples_per_s": round(med, 1),
    "repeats": [round(s, 1) for s in sps],
    "spread": round((max(sps) - min(sps)) / med, 4),
    "first_step_s": round(first_step_s, 2),
    "loss_last": round(float(loss.detach()), 4),
    "torch": torch.__version__,
}
print(json.dumps(out))
if args.json:
    Path(args.json).write_text(json.dumps(out))
