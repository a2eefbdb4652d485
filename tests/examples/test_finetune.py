"""examples/finetune_bert.py end to end on this host's CPU, as real processes: the tiny model on the synthetic
data in one process and under torchrun (2 processes, gloo), its exports and their parity check, and the usage
errors. Offline: --tiny needs no download (HF_HUB_OFFLINE=1 makes any attempt fail)."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
for _module in ("torch", "transformers", "onnx", "onnxruntime", "tensorboard"):
    pytest.importorskip(_module, reason=f"the examples need {_module} (see examples/README.md)")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
SCRIPT = EXAMPLES / "finetune_bert.py"
DATA = EXAMPLES / "data" / "chinese_reviews_synthetic.csv"
LABELS = ["negative", "neutral", "positive"]
# Chance is 1/3. Measured here (seed 42, 2 epochs, transformers 5.24 and 4.56.2 alike): accuracy 0.833 and
# macro-F1 0.836 in one process (--batch-size 16), the same under torchrun with 2 x --batch-size 8 (the two
# ranks' batches together are the one-process batches, and DDP averages their gradients); over seeds 1-5
# the one-process accuracy ranged 0.83-0.93. The bounds leave room for CPU-to-CPU float differences.
MIN_ACCURACY = 0.6
MIN_MACRO_F1 = 0.5
TINY_RUN = ["--data", str(DATA), "--tiny", "--epochs", "2", "--seed", "42"]


def run_script(
    args: list[str], cwd: Path, launcher: list[str] | None = None, extra_env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """finetune_bert.py in a fresh Python, outside any torchrun job (or TENSORBOARD_LOGDIR) of the caller."""
    dropped = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT", "TENSORBOARD_LOGDIR")
    env = {k: v for k, v in os.environ.items() if k not in dropped}
    env |= {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "CUDA_VISIBLE_DEVICES": ""}  # the CPU, everywhere
    env |= extra_env or {}
    command = [sys.executable, *(launcher or []), str(SCRIPT), *args]
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def metrics_of(output: Path) -> dict[str, Any]:
    return json.loads((output / "metrics.json").read_text(encoding="utf-8"))


def summary(metrics: dict[str, Any]) -> str:
    return ", ".join(
        f"epoch {e['epoch']}: accuracy {e['accuracy']:.4f} macro-F1 {e['macro_f1']:.4f} "
        f"{e['samples_per_s']:.0f} samples/s"
        for e in metrics["epochs"]
    )


def explain(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("single") / "bert-finetuned"
    proc = run_script([*TINY_RUN, "--batch-size", "16", "--output", str(out), "--check-export"], out.parent)
    return proc, out


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path_factory.mktemp("ddp") / "bert-finetuned"
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = run_script([*TINY_RUN, "--batch-size", "8", "--output", str(out)], out.parent, launcher=torchrun)
    return proc, out


def test_one_process_learns_the_synthetic_set(single):
    proc, out = single
    assert proc.returncode == 0, explain(proc)
    metrics = metrics_of(out)
    print("one process:", summary(metrics))
    assert metrics["accuracy"] >= MIN_ACCURACY, metrics["epochs"]
    assert metrics["macro_f1"] >= MIN_MACRO_F1, metrics["epochs"]
    assert (metrics["world_size"], metrics["precision"], metrics["device"]) == (1, "fp32", "cpu")
    assert metrics["peak_gpu_memory_bytes"] is None
    assert metrics["labels"] == LABELS
    assert [epoch["epoch"] for epoch in metrics["epochs"]] == [1, 2]
    for epoch in metrics["epochs"]:
        assert epoch["samples_per_s"] > 0
        assert 0 <= epoch["macro_f1"] <= 1
        assert epoch["train_samples_per_rank"] == [540]
    assert "epoch 2/2: loss" in proc.stdout and "macro-F1" in proc.stdout and "samples/s" in proc.stdout


def test_tensorboard_has_loss_lr_accuracy_and_f1(single):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc, out = single
    assert proc.returncode == 0, explain(proc)
    (events,) = (out / "runs").glob("*/events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent))
    accumulator.Reload()
    tags = set(accumulator.Tags()["scalars"])
    assert {"train/loss", "train/lr", "eval/accuracy", "eval/macro_f1"} <= tags, tags
    assert [event.step for event in accumulator.Scalars("eval/accuracy")] == [1, 2]


def test_tensorboard_logs_go_where_tensorboard_logdir_points(tmp_path):
    """In the images' compose services TENSORBOARD_LOGDIR is what the tensorboard service watches."""
    watched, out = tmp_path / "runs", tmp_path / "my-model"
    args = ["--data", str(DATA), "--tiny", "--epochs", "1", "--output", str(out)]
    proc = run_script(args, tmp_path, extra_env={"TENSORBOARD_LOGDIR": str(watched)})
    assert proc.returncode == 0, explain(proc)
    assert len(list((watched / "my-model").glob("*/events.out.tfevents.*"))) == 1
    assert not (out / "runs").exists()
    assert f"TensorBoard logs: {watched / 'my-model'}/" in proc.stdout


def test_a_logdir_that_cannot_be_made_is_a_usage_error(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    args = ["--data", str(DATA), "--tiny", "--output", str(tmp_path / "out"), "--logdir", str(blocker / "tb")]
    proc = run_script(args, tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert f"--logdir {blocker / 'tb'}: cannot create it" in proc.stderr and "fix: --logdir" in proc.stderr


def test_exports_the_hugging_face_folder_torchscript_and_onnx(single):
    proc, out = single
    assert proc.returncode == 0, explain(proc)
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert config["label2id"] == {"negative": 0, "neutral": 1, "positive": 2}
    assert (out / "tokenizer_config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "model.torchscript.pt").stat().st_size > 100_000
    assert (out / "model.onnx").stat().st_size > 100_000


def test_check_export_compares_onnx_and_torchscript_with_eager(single):
    proc, out = single
    assert proc.returncode == 0, explain(proc)
    diffs = metrics_of(out)["export"]["max_abs_diff"]
    print(f"export parity, max |logits - eager|: {diffs}")
    assert set(diffs) == {"torchscript", "onnx"}
    assert max(diffs.values()) <= 1e-3
    assert "export check: max |logits - eager| torchscript" in proc.stdout


def test_torchrun_two_processes_split_the_data(two_processes):
    proc, out = two_processes
    assert proc.returncode == 0, explain(proc)
    metrics = metrics_of(out)
    print("two processes:", summary(metrics))
    assert (metrics["world_size"], metrics["backend"]) == (2, "gloo")
    assert metrics["train_samples"] == 540
    for epoch in metrics["epochs"]:
        # Each rank took half the training set, and together they covered every example once.
        assert epoch["train_samples_per_rank"] == [270, 270], epoch
        assert epoch["train_samples_covered"] == 540, epoch
        assert epoch["eval_samples"] == 60, epoch  # evaluation shards summed over ranks: each example once
    assert metrics["accuracy"] >= MIN_ACCURACY, metrics["epochs"]
    assert metrics["macro_f1"] >= MIN_MACRO_F1, metrics["epochs"]
    assert proc.stdout.count("epoch 2/2: loss") == 1  # only rank 0 logs
    assert (out / "model.onnx").is_file() and (out / "model.torchscript.pt").is_file()


def test_a_local_model_folder_jsonl_integer_labels_and_eval_data(single, tmp_path):
    """The path of a real run, offline: --model names a folder save_pretrained wrote (the tiny run's, with a
    3-label head), the data is JSONL with 2 integer labels (so the head is replaced), --eval-data given."""
    _, pretrained = single
    train, evaluation = tmp_path / "train.jsonl", tmp_path / "eval.jsonl"
    with DATA.open(encoding="utf-8") as handle:
        rows = [
            (r["text"], int(r["label"] == "positive"))
            for r in csv.DictReader(handle)
            if r["label"] != "neutral"
        ]
    for path, part in ((train, rows[:150]), (evaluation, rows[150:180])):
        path.write_text(
            "".join(json.dumps({"text": t, "label": k}) + "\n" for t, k in part), encoding="utf-8"
        )
    out = tmp_path / "out"
    args = ["--data", str(train), "--eval-data", str(evaluation), "--model", str(pretrained)]
    proc = run_script([*args, "--epochs", "1", "--lr", "1e-3", "--output", str(out)], tmp_path)
    assert proc.returncode == 0, explain(proc)
    metrics = metrics_of(out)
    assert (metrics["model"], metrics["train_samples"], metrics["eval_samples"]) == (str(pretrained), 150, 30)
    assert metrics["labels"] == ["0", "1"]
    config = json.loads((out / "config.json").read_text(encoding="utf-8"))
    assert config["id2label"] == {"0": "0", "1": "1"}


def test_help_shows_the_options_and_examples(tmp_path):
    proc = run_script(["--help"], tmp_path)
    assert proc.returncode == 0, explain(proc)
    for option in ("--tiny", "--precision", "--warmup-ratio", "--check-export", "torchrun"):
        assert option in proc.stdout


def test_a_missing_data_file_is_a_usage_error(tmp_path):
    proc = run_script(
        ["--data", str(tmp_path / "nope.csv"), "--tiny", "--output", str(tmp_path / "o")], tmp_path
    )
    assert proc.returncode == 2, explain(proc)
    assert "--data" in proc.stderr and "nope.csv" in proc.stderr and "no such file" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "o").exists()  # it failed before creating anything


def test_a_csv_without_a_label_column_is_a_usage_error(tmp_path):
    data = tmp_path / "reviews.csv"
    data.write_text("text,sentiment\n质量很好,positive\n太差了,negative\n", encoding="utf-8")
    proc = run_script(["--data", str(data), "--tiny", "--output", str(tmp_path / "o")], tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert "'label' column" in proc.stderr and "text, sentiment" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_a_missing_model_folder_is_a_usage_error(tmp_path):
    args = ["--data", str(DATA), "--model", str(tmp_path / "no-model"), "--output", str(tmp_path / "o")]
    proc = run_script(args, tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert f"--model {tmp_path / 'no-model'}: no such folder" in proc.stderr, proc.stderr


def test_a_bad_jsonl_line_is_a_usage_error_naming_the_line(tmp_path):
    data = tmp_path / "reviews.jsonl"
    data.write_text(
        '{"text": "质量很好", "label": "positive"}\n{"text": "太差了", "label": \n', encoding="utf-8"
    )
    proc = run_script(["--data", str(data), "--tiny", "--output", str(tmp_path / "o")], tmp_path)
    assert proc.returncode == 2, explain(proc)
    assert f"{data}:2: not JSON" in proc.stderr, proc.stderr


def test_the_synthetic_data_is_reproducible_and_small(tmp_path):
    out = tmp_path / "regenerated.csv"
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "data" / "make_synthetic.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes() == DATA.read_bytes(), "make_synthetic.py no longer writes the committed file"
    assert DATA.stat().st_size < 100_000
    with DATA.open(encoding="utf-8") as handle:
        labels = [row["label"] for row in csv.DictReader(handle)]
    assert {label: labels.count(label) for label in LABELS} == dict.fromkeys(LABELS, 200)
