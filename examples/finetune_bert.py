"""Fine-tune a BERT-family model for sequence classification, then export it for serving.

One script for a CPU, one GPU or many (torchrun): mixed precision where the GPU has it, DDP when started by
torchrun, TensorBoard logs, accuracy and macro-F1 per epoch, and the three artifacts `serve.py` and others
load: the Hugging Face folder, a TorchScript file and an ONNX file.

    python finetune_bert.py --data data/chinese_reviews_synthetic.csv --tiny          # offline, CPU, seconds
    python finetune_bert.py --data reviews.csv --model bert-base-chinese --epochs 3   # a real run
    torchrun --standalone --nproc-per-node 2 finetune_bert.py --data reviews.csv      # DDP, 2 processes

Exit codes: 0 ok, 1 failure (an error while training or exporting, or --check-export found the exported
logits differ from the eager model's), 2 usage error (bad option, data file or environment).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import importlib.util
import json
import math
import os
import random
import re
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

DEFAULT_MODEL = "bert-base-chinese"
DEFAULT_OUTPUT = Path("bert-finetuned")
DEFAULT_LR = 2e-5  # the usual BERT fine-tuning rate for a pretrained model
TINY_LR = 1e-3  # a tiny model trained from scratch needs a much larger step to learn in a few epochs
BASE_LR = 1e-4  # bert-base from scratch: the peak rate BERT itself was pre-trained with
# No dropout: a model trained from scratch for a few hundred steps learns faster without it (measured on the
# synthetic set, 2 epochs, 6 seeds: accuracy 0.83-0.93 without dropout, 0.63-0.98 with BERT's 0.1).
TINY_CONFIG = {
    "hidden_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 512,
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
}
# bert-base-chinese's shape, random weights: a real run's speed and memory with nothing downloaded. The
# vocabulary is made from the data, then padded to bert-base-chinese's 21128 rows so the parameter count
# (102 M) and the embedding's memory are the real model's.
BASE_CONFIG = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}
BASE_VOCAB_SIZE = 21128


@dataclass(frozen=True)
class ConfigBuilt:
    """A model --from-config builds: its shape, the smallest vocabulary it gets, its default lr."""

    shape: dict[str, Any]
    min_vocab_size: int
    lr: float
    description: str


FROM_CONFIG = {
    "tiny": ConfigBuilt(TINY_CONFIG, 0, TINY_LR, "tiny BERT from a config (hidden 128, 2 layers, 2 heads)"),
    "base": ConfigBuilt(
        BASE_CONFIG, BASE_VOCAB_SIZE, BASE_LR, "bert-base-sized BERT from a config (random weights)"
    ),
}
EVAL_FRACTION = 0.1
MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")  # the order of the exported inputs
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
TORCHSCRIPT_FILE = "model.torchscript.pt"
ONNX_FILE = "model.onnx"
METRICS_FILE = "metrics.json"
ONNX_OPSET = 17  # understood by onnxruntime 1.14 and newer
EXPORT_TOLERANCE = 1e-3
LOG_EVERY_STEPS = 10
MAX_GRAD_NORM = 1.0
WEIGHT_DECAY = 0.01
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Bad input (option, data file, environment): exit 2 with a one-line message that names the fix."""


class ExportMismatch(Exception):
    """The exported model's logits differ from the eager model's by more than EXPORT_TOLERANCE: exit 1."""


# ---------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    data: Path
    eval_data: Path | None
    model: str
    from_config: str | None  # a FROM_CONFIG name: a model built from a config, not downloaded
    output: Path
    precision: str
    epochs: int
    batch_size: int
    lr: float
    warmup_ratio: float
    max_length: int
    seed: int
    check_export: bool
    logdir: Path  # TensorBoard: each run writes a folder named by its start time in here


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}")
    return value


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), e.g. 0.1, got {text!r}")
    return value


def _expand_home(model: str) -> str:
    """~/models/x as the folder it names (from_pretrained does not expand ~); hub ids and paths unchanged."""
    return str(Path(model).expanduser()) if model.startswith("~") else model


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="Fine-tune a BERT-family model for sequence classification; export TorchScript and ONNX.",
        epilog="\n\n".join(__doc__.split("\n\n")[2:]) if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", type=Path, required=True, help="training data: CSV (text,label) or JSONL")
    parser.add_argument(
        "--eval-data",
        type=Path,
        help=f"evaluation data, same formats (default: {EVAL_FRACTION:.0%}% of --data)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--model", help=f"Hugging Face model id or local folder, any BERT family (default: {DEFAULT_MODEL})"
    )
    which.add_argument(
        "--tiny",
        dest="from_config",
        action="store_const",
        const="tiny",
        help="a small BERT from a config (hidden 128, 2 layers, 2 heads) and a character vocabulary made "
        "from the data: no download, CPU-friendly (the same as --from-config tiny)",
    )
    which.add_argument(
        "--from-config",
        choices=sorted(FROM_CONFIG),
        help="a BERT built from a config with random weights and a vocabulary made from the data, no "
        "download: tiny (as --tiny) or base (bert-base-chinese's shape, 102 M parameters: to measure a "
        "real run's speed and memory offline)",
    )
    parser.add_argument(
        "--output", type=Path, default=DEFAULT_OUTPUT, help="output folder (default: %(default)s)"
    )
    parser.add_argument(
        "--precision",
        choices=("auto", "bf16", "fp16", "fp32"),
        default="auto",
        help="auto: bf16 autocast where the GPU supports it, fp16 with a GradScaler on older GPUs, "
        "fp32 on CPU",
    )
    parser.add_argument("--epochs", type=_positive_int, default=3, help="default: %(default)s")
    parser.add_argument(
        "--batch-size", type=_positive_int, default=32, help="per process (default: %(default)s)"
    )
    parser.add_argument(
        "--lr",
        type=_positive_float,
        help=f"peak learning rate (default: {DEFAULT_LR:g}; {TINY_LR:g} with --tiny, {BASE_LR:g} with "
        "--from-config base)",
    )
    parser.add_argument(
        "--warmup-ratio", type=_ratio, default=0.1, help="share of steps warming up (default: %(default)s)"
    )
    parser.add_argument("--max-length", type=_positive_int, default=128, help="tokens (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=42, help="default: %(default)s")
    parser.add_argument(
        "--check-export",
        action="store_true",
        help="run the ONNX file (onnxruntime) and the TorchScript file on one batch and compare their "
        f"logits with the eager model's; exit 1 when they differ by more than {EXPORT_TOLERANCE:g}",
    )
    parser.add_argument(
        "--logdir",
        type=Path,
        help="TensorBoard logs go to a folder per run in here (default: $TENSORBOARD_LOGDIR/<--output's "
        "name> where that variable is set, as in the images' compose services, so their TensorBoard shows "
        "the run; else <--output>/runs)",
    )
    args = parser.parse_args(argv)
    return Options(
        data=args.data,
        eval_data=args.eval_data,
        model=_expand_home(args.model) if args.model else DEFAULT_MODEL,
        from_config=args.from_config,
        output=args.output,
        precision=args.precision,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr or (FROM_CONFIG[args.from_config].lr if args.from_config else DEFAULT_LR),
        warmup_ratio=args.warmup_ratio,
        max_length=args.max_length,
        seed=args.seed,
        check_export=args.check_export,
        logdir=args.logdir or default_logdir(args.output),
    )


def default_logdir(output: Path) -> Path:
    """Where TensorBoard watches if the environment says (compose's TENSORBOARD_LOGDIR), else by the model."""
    watched = os.environ.get("TENSORBOARD_LOGDIR", "").strip()
    return Path(watched) / output.resolve().name if watched else output / "runs"


# ------------------------------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Example:
    text: str
    label: str  # ints in the data become their decimal text, so that one label space serves both


def read_examples(path: Path, flag: str = "--data") -> list[Example]:
    """Read a CSV with a text,label header or a JSONL file of {"text": ..., "label": ...} objects."""
    if not path.is_file():
        raise UsageError(f"{flag} {path}: no such file; fix: give a CSV (columns text,label) or a JSONL file")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        examples = list(_read_csv(path, flag))
    elif suffix in (".jsonl", ".ndjson"):
        examples = list(_read_jsonl(path, flag))
    else:
        raise UsageError(
            f"{flag} {path}: unknown format {suffix or '(no suffix)'!r}; fix: a .csv file with columns "
            'text,label, or a .jsonl file with one {"text": ..., "label": ...} object per line'
        )
    if not examples:
        raise UsageError(f"{flag} {path}: no rows; fix: add labelled examples")
    return examples


def _read_csv(path: Path, flag: str) -> Iterator[Example]:
    with path.open(encoding="utf-8-sig", newline="") as handle:  # -sig: files saved by Excel start with a BOM
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        for column in ("text", "label"):
            if column not in columns:
                raise UsageError(
                    f"{flag} {path}: no {column!r} column (columns: {', '.join(columns) or 'none'}); "
                    "fix: a header row naming the columns text,label"
                )
        for row in reader:
            yield _example(row.get("text"), row.get("label"), f"{flag} {path}:{reader.line_num}")


def _read_jsonl(path: Path, flag: str) -> Iterator[Example]:
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{flag} {path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UsageError(
                    f'{where}: not JSON ({exc.msg}); fix: one object per line, {{"text": ..., "label": ...}}'
                ) from None
            if not isinstance(record, dict):
                raise UsageError(
                    f'{where}: a JSON {type(record).__name__}; fix: {{"text": ..., "label": ...}}'
                )
            yield _example(record.get("text"), record.get("label"), where)


def _example(text: object, label: object, where: str) -> Example:
    if not isinstance(text, str) or not text.strip():
        raise UsageError(f"{where}: 'text' is {text!r}; fix: a non-empty string")
    if isinstance(label, int) and not isinstance(label, bool):
        return Example(text, str(label))
    if not isinstance(label, str) or not label.strip():
        raise UsageError(f"{where}: 'label' is {label!r}; fix: a non-empty string or an integer")
    return Example(text, label.strip())


def label_names(examples: Sequence[Example]) -> list[str]:
    """The label space in a stable order: integers numerically (so 0..K-1 keep their ids), then strings."""

    def key(label: str) -> tuple[int, int, str]:
        return (0, int(label), "") if re.fullmatch(r"-?\d+", label) else (1, 0, label)

    return sorted({example.label for example in examples}, key=key)


def split_examples(examples: Sequence[Example], seed: int) -> tuple[list[Example], list[Example]]:
    """A deterministic EVAL_FRACTION hold-out: the same file and seed give the same split on every rank."""
    if len(examples) < 2:
        raise UsageError(
            f"--data: {len(examples)} row, too few to hold some out; fix: more rows, or --eval-data"
        )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_eval = max(1, round(len(examples) * EVAL_FRACTION))
    return [examples[i] for i in order[n_eval:]], [examples[i] for i in order[:n_eval]]


def load_data(opts: Options) -> tuple[list[Example], list[Example]]:
    examples = read_examples(opts.data, "--data")
    if opts.eval_data is None:
        return split_examples(examples, opts.seed)
    return examples, read_examples(opts.eval_data, "--eval-data")


# ---------------------------------------------------------------------------------- process and device


@dataclass(frozen=True)
class DistEnv:
    """This process's place in a torchrun job; the defaults are a plain single-process run."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def dist_env(environ: Mapping[str, str] = os.environ) -> DistEnv:
    """Read RANK, WORLD_SIZE and LOCAL_RANK as torchrun sets them; none of them set is a single process."""
    names = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
    present = [name for name in names if name in environ]
    if not present:
        return DistEnv()
    values: dict[str, int] = {}
    for name in names:
        text = environ.get(name)
        if text is None:
            raise UsageError(f"{name} is not set while {', '.join(present)} are; fix: start with torchrun")
        try:
            values[name] = int(text)
        except ValueError:
            raise UsageError(f"{name}={text!r} is not an integer; fix: start with torchrun") from None
    env = DistEnv(rank=values["RANK"], local_rank=values["LOCAL_RANK"], world_size=values["WORLD_SIZE"])
    if env.world_size < 1 or not 0 <= env.rank < env.world_size or env.local_rank < 0:
        raise UsageError(
            f"RANK={env.rank} WORLD_SIZE={env.world_size}: inconsistent; fix: start with torchrun"
        )
    return env


def pick_device(env: DistEnv) -> torch.device:
    if not torch.cuda.is_available():
        return torch.device("cpu")
    count = torch.cuda.device_count()
    if env.local_rank >= count:
        raise UsageError(
            f"LOCAL_RANK={env.local_rank} but this node has {count} GPU(s); "
            f"fix: torchrun --nproc-per-node {count}"
        )
    torch.cuda.set_device(env.local_rank)
    return torch.device("cuda", env.local_rank)


@dataclass(frozen=True)
class Precision:
    name: str  # bf16 | fp16 | fp32: what metrics.json records
    amp_dtype: torch.dtype | None  # the autocast dtype; None runs in fp32

    @property
    def needs_scaler(self) -> bool:
        """fp16's narrow range underflows small gradients; bf16 has fp32's range and needs no scaling."""
        return self.name == "fp16"


def resolve_precision(requested: str, device: torch.device) -> Precision:
    on_gpu = device.type == "cuda"
    bf16_ok = on_gpu and torch.cuda.is_bf16_supported()
    if requested == "auto":
        requested = ("bf16" if bf16_ok else "fp16") if on_gpu else "fp32"
    if requested == "fp16" and not on_gpu:
        raise UsageError(
            "--precision fp16: needs a CUDA GPU (for the GradScaler); fix: --precision fp32 or bf16"
        )
    if requested == "bf16" and on_gpu and not bf16_ok:
        raise UsageError(
            f"--precision bf16: {torch.cuda.get_device_name(device)} has no bf16; "
            "fix: --precision fp16 or auto"
        )
    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}
    return Precision(requested, dtypes[requested])


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager[Any]:
    if precision.amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.amp_dtype)


def preflight(opts: Options, env: DistEnv) -> None:
    """Fail in the first second, not after hours of training: the modules the saving steps import."""
    needed = {"onnx": "exporting model.onnx"}
    if env.is_main:
        needed["tensorboard"] = "TensorBoard logs"
    if opts.check_export:
        needed["onnxruntime"] = "--check-export"
    for module, why in needed.items():
        if importlib.util.find_spec(module) is None:
            raise UsageError(
                f"{why} needs the Python package {module!r}, not installed; fix: pip install {module}"
            )
    looks_like_path = opts.model.startswith(("/", "./", "../", "~"))
    if not opts.from_config and looks_like_path and not Path(opts.model).expanduser().is_dir():
        raise UsageError(
            f"--model {opts.model}: no such folder; fix: a folder save_pretrained wrote, or a hub id"
        )
    writable = (
        ("--output", opts.output, "a writable folder"),
        (
            "--logdir",
            opts.logdir,
            "--logdir a writable folder (the default comes from TENSORBOARD_LOGDIR when that is set)",
        ),
    )
    for flag, folder, fix in writable if env.is_main else ():  # only rank 0 writes either
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"{flag} {folder}: cannot create it ({exc.strerror}); fix: {fix}") from None


# ---------------------------------------------------------------------------------- tokenizer and model


def char_vocab(texts: Sequence[str]) -> list[str]:
    """BERT's special tokens, then each character seen and its `##` continuation form, sorted.

    BERT's basic tokenizer already splits CJK text into single characters; the `##` forms let WordPiece spell
    any other word character by character, so nothing seen in training becomes [UNK]."""
    chars = sorted({char for text in texts for char in text.lower() if not char.isspace()})
    return [*SPECIAL_TOKENS, *chars, *(f"##{char}" for char in chars)]


def build_tiny_tokenizer(texts: Sequence[str]) -> Any:
    """A BertTokenizerFast over char_vocab(texts), made offline.

    The vocab goes to a folder of this process's own (on several nodes the output folder may not be shared)
    and is loaded with from_pretrained, the one constructor transformers 4 and 5 both read a vocab.txt with;
    save_pretrained later writes it into the output folder with the model."""
    from transformers import BertTokenizerFast

    with tempfile.TemporaryDirectory(prefix="tiny-vocab-") as folder:
        (Path(folder) / "vocab.txt").write_text("\n".join(char_vocab(texts)) + "\n", encoding="utf-8")
        return BertTokenizerFast.from_pretrained(folder)


def build_model_and_tokenizer(
    opts: Options, labels: Sequence[str], train_texts: Sequence[str]
) -> tuple[Any, Any]:
    """The model with a classification head for `labels` (id2label/label2id in its config), its tokenizer."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        BertConfig,
        BertForSequenceClassification,
    )

    id2label = dict(enumerate(labels))
    label2id = {label: i for i, label in id2label.items()}
    if opts.from_config:
        built = FROM_CONFIG[opts.from_config]
        tokenizer = build_tiny_tokenizer(train_texts)
        config = BertConfig(
            vocab_size=max(len(tokenizer), built.min_vocab_size),
            pad_token_id=tokenizer.pad_token_id,
            max_position_embeddings=max(512, opts.max_length),
            num_labels=len(labels),
            id2label=id2label,
            label2id=label2id,
            **built.shape,
        )
        model = BertForSequenceClassification(config)
    else:
        try:
            tokenizer = AutoTokenizer.from_pretrained(opts.model)
            model = AutoModelForSequenceClassification.from_pretrained(
                opts.model,
                num_labels=len(labels),
                id2label=id2label,
                label2id=label2id,
                ignore_mismatched_sizes=True,  # a checkpoint's own head (other labels) is replaced
            )
        except (OSError, ValueError) as exc:  # ValueError: huggingface_hub's HFValidationError for a bad id
            first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(
                f"--model {opts.model}: cannot load it ({first_line}); fix: a local model folder, network "
                "access to the Hugging Face hub (or HF_HOME with it cached), or --tiny"
            ) from None
    model.float()  # fp32 master weights (transformers 5 loads a checkpoint in its own dtype); autocast casts
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit is not None and opts.max_length > limit:
        raise UsageError(
            f"--max-length {opts.max_length}: the model takes at most {limit}; fix: --max-length {limit}"
        )
    tokenizer.model_max_length = opts.max_length  # saved with it: serve.py truncates as training did
    return model, tokenizer


# ------------------------------------------------------------------------------------------ encoded data


@dataclass(frozen=True)
class Encoded(Dataset):
    """Token ids of every example, tokenized once up front; batches are padded by PadCollator."""

    features: dict[str, list[list[int]]]  # MODEL_INPUTS the tokenizer produces -> one id list per example
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[dict[str, list[int]], int]:
        return {name: values[index] for name, values in self.features.items()}, self.labels[index]


def encode(
    tokenizer: Any, examples: Sequence[Example], label2id: Mapping[str, int], max_length: int
) -> Encoded:
    encodings = tokenizer([example.text for example in examples], truncation=True, max_length=max_length)
    features = {name: list(encodings[name]) for name in MODEL_INPUTS if name in encodings}
    return Encoded(features, [label2id[example.label] for example in examples])


@dataclass(frozen=True)
class PadCollator:
    """Dynamic padding: each batch only as wide as its longest example."""

    pad_id: int

    def __call__(self, items: Sequence[tuple[dict[str, list[int]], int]]) -> dict[str, torch.Tensor]:
        width = max(len(features["input_ids"]) for features, _ in items)
        batch = {
            name: torch.tensor(
                [
                    f[name] + [self.pad_id if name == "input_ids" else 0] * (width - len(f[name]))
                    for f, _ in items
                ]
            )
            for name in items[0][0]
        }
        batch["labels"] = torch.tensor([label for _, label in items])
        return batch


def padded_batch(encoded: Encoded, indices: Sequence[int], collate: PadCollator) -> dict[str, torch.Tensor]:
    """A batch of `indices` plus one all-padding column: every row then has a padded position.

    The exporters trace one path through transformers' masking code; with a padded example that path is the
    one that applies the attention mask, right for every input (an all-ones example may trace a path that
    drops the mask, wrong for padded inputs later)."""
    batch = collate([encoded[i] for i in indices])
    rows = batch["input_ids"].shape[0]
    for name in batch:
        if name != "labels":
            fill = collate.pad_id if name == "input_ids" else 0
            batch[name] = torch.cat(
                [batch[name], torch.full((rows, 1), fill, dtype=batch[name].dtype)], dim=1
            )
    return batch


# -------------------------------------------------------------------------------------------- training


def linear_warmup_decay(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """The LambdaLR factor: 0 -> 1 over the warm-up, then linearly back to 0 at the last step."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on weight matrices only: decaying biases and LayerNorm gains only hurts."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim < 2 or "LayerNorm" in name else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def all_reduce(values: Sequence[float], device: torch.device, op: str = "sum") -> list[float]:
    """Sum (or max) numbers over all ranks; the identity in a single process."""
    tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
    if dist.is_initialized():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return tensor.tolist()


@dataclass
class TrainState:
    model: torch.nn.Module  # DDP-wrapped in a torchrun job
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    precision: Precision
    device: torch.device
    writer: Any  # SummaryWriter on rank 0, else None
    step: int = 0


@dataclass(frozen=True)
class TrainStats:
    loss: float
    samples: int  # over all ranks
    samples_per_rank: list[int]
    samples_covered: int  # distinct training examples seen by any rank: proves the ranks split the data
    seconds: float


def train_epoch(
    state: TrainState, loader: DataLoader, sampler: DistributedSampler, dataset_size: int
) -> TrainStats:
    state.model.train()
    device = state.device
    seen = torch.zeros(dataset_size, dtype=torch.float64, device=device)
    seen[torch.tensor(list(sampler), device=device)] = 1  # the indices this epoch's loader is about to yield
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # on device: no sync per step
    samples = 0
    start = time.perf_counter()
    for batch in loader:
        batch = {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
        labels = batch.pop("labels")
        with autocast(device, state.precision):
            logits = state.model(**batch).logits
        loss = F.cross_entropy(logits.float(), labels)
        state.scaler.scale(loss).backward()
        state.scaler.unscale_(state.optimizer)
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), MAX_GRAD_NORM)
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.scheduler.step()
        state.optimizer.zero_grad(set_to_none=True)
        loss_sum += loss.detach().double() * labels.shape[0]
        samples += labels.shape[0]
        state.step += 1
        if state.writer is not None and state.step % LOG_EVERY_STEPS == 0:
            state.writer.add_scalar("train/loss", loss.item(), state.step)
            state.writer.add_scalar("train/lr", state.scheduler.get_last_lr()[0], state.step)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    per_rank = [0.0] * world
    per_rank[rank] = samples
    totals = all_reduce([loss_sum.item(), samples, *per_rank], device)
    if dist.is_initialized():
        dist.all_reduce(seen)
    (slowest,) = all_reduce([seconds], device, op="max")
    return TrainStats(
        loss=totals[0] / max(1, totals[1]),
        samples=int(totals[1]),
        samples_per_rank=[int(n) for n in totals[2:]],
        samples_covered=int((seen > 0).sum().item()),
        seconds=slowest,
    )


@dataclass(frozen=True)
class EvalStats:
    loss: float
    accuracy: float
    macro_f1: float
    samples: int


def macro_f1(confusion: Sequence[Sequence[int]]) -> float:
    """Unweighted mean of per-class F1 = 2TP / (2TP + FP + FN), from a [true][predicted] count matrix.

    Classes that occur neither as truth nor as prediction are left out, as scikit-learn does by default."""
    scores = []
    for k in range(len(confusion)):
        tp = confusion[k][k]
        fn = sum(confusion[k]) - tp
        fp = sum(row[k] for row in confusion) - tp
        if tp + fp + fn:
            scores.append(2 * tp / (2 * tp + fp + fn))
    return sum(scores) / len(scores) if scores else 0.0


@torch.no_grad()
def evaluate(
    model: torch.nn.Module,
    loader: DataLoader,
    num_labels: int,
    device: torch.device,
    precision: Precision,
) -> EvalStats:
    """Each rank scores its own shard; the confusion counts and loss are summed over ranks, so the figures
    are exact for the whole evaluation set."""
    model.eval()
    confusion = torch.zeros(num_labels, num_labels, dtype=torch.float64, device=device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for batch in loader:
        batch = {name: tensor.to(device, non_blocking=True) for name, tensor in batch.items()}
        labels = batch.pop("labels")
        with autocast(device, precision):
            logits = model(**batch).logits.float()
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").double()
        confusion.index_put_(
            (labels, logits.argmax(dim=-1)), torch.ones_like(labels, dtype=confusion.dtype), True
        )
    if dist.is_initialized():
        dist.all_reduce(confusion)
        dist.all_reduce(loss_sum)
    counts = confusion.long().tolist()
    total = sum(map(sum, counts))
    correct = sum(counts[k][k] for k in range(num_labels))
    return EvalStats(
        loss=loss_sum.item() / max(1, total),
        accuracy=correct / max(1, total),
        macro_f1=macro_f1(counts),
        samples=total,
    )


# ---------------------------------------------------------------------------------------------- export


class LogitsWithTokenTypes(torch.nn.Module):
    """The model as a function of tensors to logits: what tracing and ONNX export need (no dict output)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
    ) -> torch.Tensor:
        return self.model(
            input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
        ).logits


class Logits(torch.nn.Module):
    """As LogitsWithTokenTypes, for models whose tokenizer makes no token_type_ids (RoBERTa, DistilBERT)."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def export_wrapper(model: torch.nn.Module, input_names: Sequence[str]) -> torch.nn.Module:
    wrapper = LogitsWithTokenTypes(model) if "token_type_ids" in input_names else Logits(model)
    return wrapper.eval()


@contextlib.contextmanager
def quiet_export_warnings() -> Iterator[None]:
    """Hide the warnings tracing always prints here: the TracerWarnings mark branches taken on the padded
    example batch (the ones wanted), and torch 2.9+ flags the TorchScript-based exporter chosen on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings(
            "ignore", message=".*(TorchScript|trace_method|jit).*", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message=".*aten::index.*", category=UserWarning)
        yield


def export_torchscript(wrapper: torch.nn.Module, batch: Mapping[str, torch.Tensor], path: Path) -> None:
    """torch.jit.trace on the CPU in fp32: the file runs anywhere torch does, C++ (libtorch) included."""
    names = _input_names(wrapper)
    with quiet_export_warnings(), torch.no_grad():
        traced = torch.jit.trace(wrapper, tuple(batch[name] for name in names))
    traced.save(str(path))


def export_onnx(wrapper: torch.nn.Module, batch: Mapping[str, torch.Tensor], path: Path) -> None:
    """ONNX with dynamic batch and sequence axes, through the TorchScript-based exporter (dynamo=False).

    That exporter is torch 2.8's default and still works in 2.13, needs only the `onnx` package, and writes
    one self-contained file. The dynamo exporter (the default from torch 2.9) also needs `onnxscript` and
    writes the weights to a separate model.onnx.data by default."""
    names = _input_names(wrapper)
    dynamic_axes = {name: {0: "batch", 1: "sequence"} for name in names} | {"logits": {0: "batch"}}
    with quiet_export_warnings(), torch.no_grad():
        torch.onnx.export(
            wrapper,
            tuple(batch[name] for name in names),
            str(path),
            input_names=list(names),
            output_names=["logits"],
            dynamic_axes=dynamic_axes,
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )


def _input_names(wrapper: torch.nn.Module) -> tuple[str, ...]:
    return MODEL_INPUTS if isinstance(wrapper, LogitsWithTokenTypes) else MODEL_INPUTS[:2]


def check_export(
    wrapper: torch.nn.Module, batch: Mapping[str, torch.Tensor], folder: Path
) -> dict[str, float]:
    """Max |logits difference| of the saved TorchScript and ONNX files against the eager model, one batch."""
    import onnxruntime

    names = _input_names(wrapper)
    inputs = tuple(batch[name] for name in names)
    with torch.no_grad():
        eager = wrapper(*inputs)
        traced = torch.jit.load(str(folder / TORCHSCRIPT_FILE), map_location="cpu")(*inputs)
    session = onnxruntime.InferenceSession(str(folder / ONNX_FILE), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run(["logits"], {name: batch[name].numpy() for name in names})
    return {
        "torchscript": (traced - eager).abs().max().item(),
        "onnx": (torch.from_numpy(onnx_logits) - eager).abs().max().item(),
    }


# ------------------------------------------------------------------------------------------------- run


@dataclass
class Metrics:
    """What metrics.json holds: the run's settings, one record per epoch, and the export."""

    model: str
    precision: str
    device: str
    world_size: int
    backend: str | None
    train_samples: int
    eval_samples: int
    labels: list[str]
    batch_size_per_process: int
    lr: float
    torch_version: str = torch.__version__
    transformers_version: str = ""
    epochs: list[dict[str, Any]] = field(default_factory=list)
    export: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        last = self.epochs[-1] if self.epochs else {}
        peaks = [e["peak_gpu_memory_bytes"] for e in self.epochs if e["peak_gpu_memory_bytes"] is not None]
        return {
            **asdict(self),
            "accuracy": last.get("accuracy"),
            "macro_f1": last.get("macro_f1"),
            "samples_per_s": last.get("samples_per_s"),
            "peak_gpu_memory_bytes": max(peaks) if peaks else None,
        }


def epoch_line(record: Mapping[str, Any], epochs: int) -> str:
    line = (
        f"epoch {record['epoch']}/{epochs}: loss {record['train_loss']:.4f}  "
        f"eval loss {record['eval_loss']:.4f}  accuracy {record['accuracy']:.4f}  "
        f"macro-F1 {record['macro_f1']:.4f}  "
        f"{record['samples_per_s']:.1f} samples/s"
    )
    if record["peak_gpu_memory_bytes"] is not None:
        line += f"  peak GPU memory {record['peak_gpu_memory_bytes'] / 2**30:.2f} GiB"
    return line


def make_loaders(
    train: Encoded,
    evaluation: Encoded,
    opts: Options,
    env: DistEnv,
    collate: PadCollator,
    device: torch.device,
) -> tuple[DataLoader, DistributedSampler, DataLoader]:
    """Training batches from a DistributedSampler (a single process is a job of one); evaluation sharded
    rank::world_size without the sampler's padding, so every example is scored exactly once."""
    sampler = DistributedSampler(
        train, num_replicas=env.world_size, rank=env.rank, shuffle=True, seed=opts.seed, drop_last=False
    )
    pin = device.type == "cuda"
    train_loader = DataLoader(
        train, batch_size=opts.batch_size, sampler=sampler, collate_fn=collate, pin_memory=pin
    )
    shard = torch.utils.data.Subset(evaluation, range(env.rank, len(evaluation), env.world_size))
    eval_loader = DataLoader(shard, batch_size=opts.batch_size * 2, collate_fn=collate, pin_memory=pin)
    return train_loader, sampler, eval_loader


def train(
    opts: Options,
    env: DistEnv,
    device: torch.device,
    precision: Precision,
    train_examples: Sequence[Example],
    eval_examples: Sequence[Example],
) -> int:
    labels = label_names([*train_examples, *eval_examples])
    random.seed(opts.seed)
    torch.manual_seed(opts.seed)
    model, tokenizer = build_model_and_tokenizer(opts, labels, [e.text for e in train_examples])
    label2id = {label: i for i, label in enumerate(labels)}
    train_set = encode(tokenizer, train_examples, label2id, opts.max_length)
    eval_set = encode(tokenizer, eval_examples, label2id, opts.max_length)
    collate = PadCollator(tokenizer.pad_token_id)
    train_loader, sampler, eval_loader = make_loaders(train_set, eval_set, opts, env, collate, device)

    model.to(device)
    trained = model
    if env.distributed:
        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(param_groups(model, WEIGHT_DECAY), lr=opts.lr, fused=device.type == "cuda")
    total_steps = opts.epochs * len(train_loader)
    warmup = math.ceil(total_steps * opts.warmup_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_warmup_decay(warmup, total_steps))
    scaler = torch.amp.GradScaler("cuda", enabled=precision.needs_scaler)
    writer = summary_writer(opts.logdir) if env.is_main else None
    state = TrainState(trained, optimizer, scheduler, scaler, precision, device, writer)
    metrics = Metrics(
        model=FROM_CONFIG[opts.from_config].description if opts.from_config else opts.model,
        precision=precision.name,
        device=str(device.type),
        world_size=env.world_size,
        backend=dist.get_backend() if dist.is_initialized() else None,
        train_samples=len(train_set),
        eval_samples=len(eval_set),
        labels=list(labels),
        batch_size_per_process=opts.batch_size,
        lr=opts.lr,
        transformers_version=_transformers_version(),
    )
    _log(
        env,
        f"training {metrics.model} on {len(train_set)} examples, evaluating on {len(eval_set)}: "
        f"{opts.epochs} epochs, {env.world_size} process(es) on {device.type}, precision {precision.name}",
    )
    for epoch in range(1, opts.epochs + 1):
        sampler.set_epoch(epoch)  # a new shuffle each epoch, the same on every rank
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        stats = train_epoch(state, train_loader, sampler, len(train_set))
        # The plain model, not the DDP wrapper: DDP's first forward after training broadcasts buffers, a
        # collective that hangs when a rank's evaluation shard is empty (more ranks than examples).
        result = evaluate(model, eval_loader, len(labels), device, precision)
        record = _epoch_record(epoch, stats, result, device)
        metrics.epochs.append(record)
        _log(env, epoch_line(record, opts.epochs))
        if writer is not None:
            for name in ("accuracy", "macro_f1", "eval_loss"):
                writer.add_scalar(f"eval/{name}", record[name], epoch)
            writer.add_scalar("train/epoch_loss", record["train_loss"], epoch)
            writer.add_scalar("train/samples_per_s", record["samples_per_s"], epoch)
    if writer is not None:
        writer.close()
    status = save_and_export(opts, model, tokenizer, eval_set, collate, metrics) if env.is_main else EXIT_OK
    if dist.is_initialized():
        # The others wait for rank 0's saving, so that all ranks tear the process group down together: a rank
        # that destroys it while a peer still holds it open can abort at exit (gloo here: 2 of 10 runs
        # without this barrier, 0 of 36 with it).
        dist.barrier()
    return status


def _epoch_record(epoch: int, stats: TrainStats, result: EvalStats, device: torch.device) -> dict[str, Any]:
    peak = (
        all_reduce([torch.cuda.max_memory_allocated(device)], device, "max")[0]
        if device.type == "cuda"
        else None
    )
    return {
        "epoch": epoch,
        "train_loss": stats.loss,
        "eval_loss": result.loss,
        "accuracy": result.accuracy,
        "macro_f1": result.macro_f1,
        "samples_per_s": stats.samples / stats.seconds if stats.seconds > 0 else None,
        "train_seconds": stats.seconds,
        "train_samples": stats.samples,
        "train_samples_per_rank": stats.samples_per_rank,
        "train_samples_covered": stats.samples_covered,
        "eval_samples": result.samples,
        "peak_gpu_memory_bytes": int(peak) if peak is not None else None,
    }


def save_and_export(
    opts: Options,
    model: torch.nn.Module,
    tokenizer: Any,
    eval_set: Encoded,
    collate: PadCollator,
    metrics: Metrics,
) -> int:
    """Rank 0: the Hugging Face folder, TorchScript and ONNX (from the CPU fp32 model), metrics.json."""
    out = opts.output
    model.to("cpu").float().eval()  # training is over: the GPU copy is not needed any more
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    wrapper = export_wrapper(model, list(eval_set.features))
    indices = list(range(min(4, len(eval_set))))
    export_torchscript(wrapper, padded_batch(eval_set, indices, collate), out / TORCHSCRIPT_FILE)
    export_onnx(wrapper, padded_batch(eval_set, indices, collate), out / ONNX_FILE)
    metrics.export = {
        "torchscript": TORCHSCRIPT_FILE,
        "onnx": ONNX_FILE,
        "onnx_exporter": f"torch.onnx.export(dynamo=False, opset_version={ONNX_OPSET})",
        "inputs": list(_input_names(wrapper)),
        "max_abs_diff": None,
    }
    failure = None
    if opts.check_export:
        # Another batch size and width than the traced example: the dynamic axes are checked too.
        check_indices = list(range(len(eval_set)))[-8:]
        diffs = check_export(wrapper, padded_batch(eval_set, check_indices, collate), out)
        metrics.export["max_abs_diff"] = diffs
        print(
            f"export check: max |logits - eager| torchscript {diffs['torchscript']:.2e}  "
            f"onnx {diffs['onnx']:.2e}  (tolerance {EXPORT_TOLERANCE:g})",
            flush=True,
        )
        worst = max(diffs, key=lambda name: diffs[name])
        if diffs[worst] > EXPORT_TOLERANCE:
            failure = (
                f"{worst} logits differ from the eager model's by {diffs[worst]:.2e} > {EXPORT_TOLERANCE:g}"
            )
    (out / METRICS_FILE).write_text(json.dumps(metrics.summary(), indent=2) + "\n", encoding="utf-8")
    print(
        f"saved the model, {TORCHSCRIPT_FILE}, {ONNX_FILE} and {METRICS_FILE} to {out.resolve()}", flush=True
    )
    if failure:
        raise ExportMismatch(failure)
    return EXIT_OK


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def summary_writer(logdir: Path) -> Any:
    """A TensorBoard SummaryWriter for a new run: a folder named by the start time in logdir."""
    from torch.utils.tensorboard import SummaryWriter

    folder = logdir / dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    print(f"TensorBoard logs: {folder}", flush=True)
    return SummaryWriter(log_dir=str(folder))


def _log(env: DistEnv, message: str) -> None:
    if env.is_main:
        print(message, flush=True)


def run(opts: Options) -> int:
    env = dist_env()
    train_examples, eval_examples = load_data(opts)  # bad data: a usage error before any GPU or process group
    preflight(opts, env)
    device = pick_device(env)
    precision = resolve_precision(opts.precision, device)
    if env.distributed:
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        return train(opts, env, device, precision, train_examples, eval_examples)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)  # argparse itself exits 2 on a bad option
    try:
        return run(opts)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ExportMismatch as exc:
        print(f"error: export check failed: {exc}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
