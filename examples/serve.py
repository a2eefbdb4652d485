"""Serve a model exported by finetune_bert.py over HTTP, batching concurrent requests into one forward pass.

    python serve.py --model-dir bert-finetuned                # on a GPU --eager, else --torchscript
    python serve.py --model-dir bert-finetuned --torchscript  # the TorchScript file
    python serve.py --model-dir bert-finetuned --onnx         # the ONNX file, through onnxruntime
    python serve.py --model-dir bert-finetuned --eager        # the Hugging Face folder in PyTorch
    curl -s localhost:8000/predict -H 'content-type: application/json' -d '{"text": "质量很好，非常满意"}'

POST /predict {"text": "..."} answers {"label": ..., "score": ..., "batch_size": ...}; {"texts": [...]}
answers a list of those. batch_size is how many texts shared the forward pass. GET /healthz answers
{"status": "ok", "model": ..., "device": ..., "stats": {...batch sizes seen...}}.

Why batch: a GPU (and, less so, a CPU) scores 32 texts in little more time than one, so requests that arrive
together wait at most --max-wait-ms to share one pass. The pass runs in a worker thread: the event loop keeps
accepting requests meanwhile, and those become the next batch.

Which to serve, unless told: --eager (bf16) where torch sees a GPU, the TorchScript file elsewhere. The
TorchScript and ONNX files need no transformers model code, but run on the CPU only: finetune_bert.py traces
on the CPU, which pins tensors the trace makes there, and the image's onnxruntime is the CPU build. (On an
H200, bert-base: --eager on the GPU answered 32 concurrent clients 4.3 to 5.5 times as fast as TorchScript
on the CPU.)

Exit codes: 0 after Ctrl-C (SIGTERM ends it as that signal does, after the same graceful shutdown), 1 the
server could not start (e.g. the port is taken), 2 usage error (a bad option or model folder).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

try:
    import uvicorn
    from fastapi import FastAPI, HTTPException
    from pydantic import BaseModel
except ModuleNotFoundError as missing:
    print(
        f"error: serve.py needs {missing.name!r}, not installed; fix: pip install fastapi uvicorn",
        file=sys.stderr,
    )
    sys.exit(2)

TORCHSCRIPT_FILE = "model.torchscript.pt"  # the names finetune_bert.py writes
ONNX_FILE = "model.onnx"
MAX_TEXTS_PER_REQUEST = 256
WARM_UP_TEXTS = ["质量很好", "warm-up"]
EXIT_FAILED, EXIT_USAGE = 1, 2


class UsageError(Exception):
    """A bad option or model folder: exit 2 with a one-line message that names the fix."""


# ---------------------------------------------------------------------------------------------- options


@dataclass(frozen=True)
class Options:
    model_dir: Path
    backend: str  # "auto", "torchscript", "onnx" or "eager"
    access_log: bool
    device: str
    host: str
    port: int
    max_batch: int
    max_wait_ms: float


def _int_in(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be {low}..{high}, got {text!r}")
        return value

    return parse


def _milliseconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of milliseconds, got {text!r}") from None
    if not 0 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"must be 0..10000 ms, got {text!r}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        description="Serve a fine-tuned classifier (TorchScript, ONNX or the Hugging Face folder) with "
        "dynamic request batching.",
        epilog="\n\n".join(__doc__.split("\n\n")[1:4]) if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path("bert-finetuned"),
        help="finetune_bert.py's --output folder (default: %(default)s)",
    )
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--torchscript",
        dest="backend",
        action="store_const",
        const="torchscript",
        help=f"serve {TORCHSCRIPT_FILE} (the default where torch sees no GPU)",
    )
    which.add_argument(
        "--onnx",
        dest="backend",
        action="store_const",
        const="onnx",
        help=f"serve {ONNX_FILE} with onnxruntime",
    )
    which.add_argument(
        "--eager",
        dest="backend",
        action="store_const",
        const="eager",
        help="serve the Hugging Face folder with transformers in PyTorch, bf16 on a GPU (fp16 on GPUs "
        "without bf16), fp32 on the CPU (the default where torch sees a GPU)",
    )
    parser.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto: the GPU when there is one and the model runs there, else the CPU (default: %(default)s)",
    )
    parser.add_argument("--host", default="0.0.0.0", help="default: %(default)s")
    parser.add_argument("--port", type=_int_in(0, 65535), default=8000, help="default: %(default)s")
    parser.add_argument(
        "--max-batch", type=_int_in(1, 4096), default=32, help="texts per forward pass (default: %(default)s)"
    )
    parser.add_argument(
        "--max-wait-ms",
        type=_milliseconds,
        default=5.0,
        help="how long a request waits for others to share its pass (default: %(default)s)",
    )
    parser.add_argument(
        "--access-log",
        action="store_true",
        help="log every request (off by default: under load that is a line per request)",
    )
    args = parser.parse_args(argv)
    return Options(
        args.model_dir,
        args.backend or "auto",
        args.access_log,
        args.device,
        args.host,
        args.port,
        args.max_batch,
        args.max_wait_ms,
    )


# ------------------------------------------------------------------------------------------------ model


class Backend(Protocol):
    """Token id arrays (name -> [batch, sequence] int64) in, logits [batch, labels] out."""

    device: str
    dtype: str  # what the forward pass computes in: "float32", "bfloat16" or "float16"
    input_names: list[str]

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray: ...


class TorchScriptBackend:
    dtype = "float32"  # finetune_bert.py traces the fp32 model

    def __init__(self, path: Path, device: str) -> None:
        import torch

        self._torch = torch
        self.device = device
        self.module = torch.jit.load(str(path), map_location=device).eval()
        # The traced wrapper's own argument names, in order (the first is `self`).
        self.input_names = [argument.name for argument in self.module.forward.schema.arguments[1:]]

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        tensors = [torch.from_numpy(inputs[name]).to(self.device) for name in self.input_names]
        with torch.inference_mode():
            return self.module(*tensors).float().cpu().numpy()


class OnnxBackend:
    dtype = "float32"  # exported from the fp32 model

    def __init__(self, path: Path, device: str) -> None:
        import onnxruntime

        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" else []
        self.session = onnxruntime.InferenceSession(str(path), providers=[*providers, "CPUExecutionProvider"])
        self.device = "cuda" if self.session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        self.input_names = [node.name for node in self.session.get_inputs()]

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        (logits,) = self.session.run(["logits"], {name: inputs[name] for name in self.input_names})
        return logits


class EagerBackend:
    """The Hugging Face folder in PyTorch: bf16 on a GPU (fp16 where it has no bf16), fp32 on the CPU."""

    def __init__(self, folder: Path, device: str) -> None:
        import inspect

        import torch
        from transformers import AutoModelForSequenceClassification

        self._torch = torch
        self.device = device
        dtype = torch.float32
        if device == "cuda":
            dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        self.dtype = str(dtype).removeprefix("torch.")
        model = AutoModelForSequenceClassification.from_pretrained(folder)
        self.model = model.to(device=device, dtype=dtype).eval()
        accepted = inspect.signature(model.forward).parameters  # DistilBERT takes no token_type_ids
        self.input_names = [
            name for name in ("input_ids", "attention_mask", "token_type_ids") if name in accepted
        ]

    def __call__(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        torch = self._torch
        tensors = {name: torch.from_numpy(inputs[name]).to(self.device) for name in self.input_names}
        with torch.inference_mode():
            return self.model(**tensors).logits.float().cpu().numpy()


@dataclass(frozen=True)
class Prediction:
    label: str
    score: float
    batch_size: int = 1  # how many texts shared the forward pass


@dataclass
class Classifier:
    """Tokenizer, backend and label names: texts in, predictions out. Called from one thread at a time."""

    tokenizer: Any
    backend: Backend
    labels: list[str]
    max_length: int
    model_file: Path
    backend_name: str  # "torchscript", "onnx" or "eager"

    def __call__(self, texts: list[str]) -> list[Prediction]:
        encoded = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="np"
        )
        shape = encoded["input_ids"].shape
        inputs = {
            name: (encoded[name] if name in encoded else np.zeros(shape)).astype(np.int64)
            for name in self.backend.input_names
        }
        logits = self.backend(inputs).astype(np.float64)
        probabilities = np.exp(logits - logits.max(axis=-1, keepdims=True))
        probabilities /= probabilities.sum(axis=-1, keepdims=True)
        best = probabilities.argmax(axis=-1)
        return [
            Prediction(self.labels[int(k)], float(probabilities[row, k]), len(texts))
            for row, k in enumerate(best)
        ]


def read_labels(config_path: Path) -> list[str]:
    """id2label from the Hugging Face config, ordered by id."""
    config = json.loads(config_path.read_text(encoding="utf-8"))
    id2label = config.get("id2label") or {}
    if not id2label:
        raise UsageError(
            f"--model-dir: {config_path} has no id2label; fix: a folder written by finetune_bert.py"
        )
    return [str(id2label[key]) for key in sorted(id2label, key=int)]


def _max_length(tokenizer: Any, config_path: Path) -> int:
    """The training run's --max-length (saved as the tokenizer's model_max_length), within the model's."""
    limit = json.loads(config_path.read_text(encoding="utf-8")).get("max_position_embeddings", 512)
    return min(int(tokenizer.model_max_length), int(limit))


def load_classifier(opts: Options) -> Classifier:
    folder = opts.model_dir
    devices = _devices(opts.device)
    backend_name = opts.backend
    if backend_name == "auto":
        backend_name = "eager" if devices[0] == "cuda" else "torchscript"
    # The exported files are one file each; eager reads the whole Hugging Face folder.
    exported = {"onnx": ONNX_FILE, "torchscript": TORCHSCRIPT_FILE}.get(backend_name)
    model_file = folder / exported if exported else folder
    for path in [folder / "config.json", *([model_file] if exported else [])]:
        if not path.is_file():
            raise UsageError(
                f"--model-dir {folder}: no {path.name}; fix: the --output folder of a finetune_bert.py run"
            )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    labels = read_labels(folder / "config.json")
    max_length = _max_length(tokenizer, folder / "config.json")
    for device in devices:
        backend = BACKENDS[backend_name](model_file, device)
        classifier = Classifier(tokenizer, backend, labels, max_length, model_file, backend_name)
        try:
            classifier(WARM_UP_TEXTS)
        except RuntimeError as exc:
            if device != "cuda" or opts.device == "cuda":
                raise
            # A TorchScript file traced on the CPU can pin tensors it creates to the CPU (transformers' mask
            # code does): then it only runs there.
            reason = str(exc).strip().splitlines()[-1][:200]
            fix = "--device cuda to see the whole error" if backend_name == "eager" else "--eager"
            print(
                f"serve: {model_file.name} ({backend_name}) does not run on the GPU ({reason}); serving on "
                f"the CPU. For the GPU: {fix}",
                file=sys.stderr,
                flush=True,
            )
            continue
        return classifier
    raise AssertionError("unreachable: the CPU is always the last device tried")


BACKENDS: dict[str, Callable[[Path, str], Backend]] = {
    "torchscript": TorchScriptBackend,
    "onnx": OnnxBackend,
    "eager": EagerBackend,
}


def _devices(requested: str) -> list[str]:
    if requested == "cpu":
        return ["cpu"]
    import torch

    has_gpu = torch.cuda.is_available()
    if requested == "cuda" and not has_gpu:
        raise UsageError("--device cuda: torch sees no GPU here; fix: --device cpu or auto")
    return ["cuda"] if requested == "cuda" else ["cuda", "cpu"] if has_gpu else ["cpu"]


# ------------------------------------------------------------------------------------------- batching


@dataclass
class BatchStats:
    batches: int = 0
    texts: int = 0
    sizes: Counter[int] = field(default_factory=Counter)

    def record(self, size: int) -> None:
        self.batches += 1
        self.texts += size
        self.sizes[size] += 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "texts": self.texts,
            "max_batch_size": max(self.sizes, default=0),
            "mean_batch_size": self.texts / self.batches if self.batches else None,
            "batch_sizes": {str(size): count for size, count in sorted(self.sizes.items())},
        }


@dataclass
class Pending:
    text: str
    future: asyncio.Future[Prediction]


class Batcher:
    """Collects texts from concurrent requests into batches of at most max_batch, waiting at most max_wait_s
    after the first; one background task runs the passes one after another in a worker thread."""

    def __init__(self, classify: Callable[[list[str]], list[Prediction]], max_batch: int, max_wait_s: float):
        self.classify = classify
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.queue: asyncio.Queue[Pending] = asyncio.Queue()
        self.stats = BatchStats()

    async def submit(self, texts: Sequence[str]) -> list[Prediction]:
        loop = asyncio.get_running_loop()
        pending = [Pending(text, loop.create_future()) for text in texts]
        for item in pending:
            self.queue.put_nowait(item)
        return list(await asyncio.gather(*(item.future for item in pending)))

    async def run(self) -> None:
        while True:
            batch = await self._next_batch()
            try:
                predictions = await asyncio.to_thread(self.classify, [item.text for item in batch])
            except Exception as exc:  # one bad batch fails its own requests, not the server
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.stats.record(len(batch))
            for item, prediction in zip(batch, predictions, strict=True):
                if not item.future.done():  # the client may have gone away
                    item.future.set_result(prediction)

    async def _next_batch(self) -> list[Pending]:
        batch = [await self.queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            if not self.queue.empty():  # queued during the last pass: take it without waiting
                batch.append(self.queue.get_nowait())
                continue
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self.queue.get(), remaining))
            except TimeoutError:
                break
        return batch


# ------------------------------------------------------------------------------------------------- HTTP


class PredictRequest(BaseModel):
    text: str | None = None
    texts: list[str] | None = None


def request_texts(request: PredictRequest) -> list[str]:
    """The texts to score; a request that names neither or both fields, or an empty text, is a 422."""
    if (request.text is None) == (request.texts is None):
        raise HTTPException(422, 'give exactly one of "text" (a string) or "texts" (a list of strings)')
    texts = [request.text] if request.text is not None else list(request.texts or [])
    if not texts or len(texts) > MAX_TEXTS_PER_REQUEST:
        raise HTTPException(422, f'"texts" holds {len(texts)} texts; fix: 1..{MAX_TEXTS_PER_REQUEST}')
    for index, text in enumerate(texts):
        if not text.strip():
            where = '"text"' if request.text is not None else f'"texts"[{index}]'
            raise HTTPException(422, f"{where} is empty; fix: a non-empty string")
    return texts


def create_app(classifier: Classifier, opts: Options) -> FastAPI:
    batcher = Batcher(classifier, opts.max_batch, opts.max_wait_ms / 1000)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(batcher.run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app = FastAPI(title="BERT classifier", lifespan=lifespan)

    @app.post("/predict")
    async def predict(request: PredictRequest) -> Any:
        predictions = await batcher.submit(request_texts(request))
        answers = [vars(prediction) for prediction in predictions]
        return answers[0] if request.text is not None else answers

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": str(classifier.model_file),
            "backend": classifier.backend_name,
            "dtype": classifier.backend.dtype,
            "device": classifier.backend.device,
            "labels": classifier.labels,
            "max_batch": opts.max_batch,
            "max_wait_ms": opts.max_wait_ms,
            "stats": batcher.stats.as_dict(),
        }

    return app


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    try:
        classifier = load_classifier(opts)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(
        f"serve: {classifier.model_file} ({classifier.backend_name}) on {classifier.backend.device}, "
        f"labels {classifier.labels}, "
        f"batches of up to {opts.max_batch} within {opts.max_wait_ms:g} ms",
        flush=True,
    )
    config = uvicorn.Config(
        create_app(classifier, opts), host=opts.host, port=opts.port, access_log=opts.access_log
    )
    server = uvicorn.Server(config)
    try:
        server.run()
    except KeyboardInterrupt:  # uvicorn shuts down gracefully on Ctrl-C, then raises it again
        return 0
    except SystemExit:  # uvicorn exits 3 when it cannot bind; this script's code for that is 1
        pass
    if not server.started:
        print(
            f"error: the server did not start on {opts.host}:{opts.port} (uvicorn's message above); "
            "fix: another --port, or stop what holds it",
            file=sys.stderr,
        )
        return EXIT_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
