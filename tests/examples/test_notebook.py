"""examples/finetune_bert.ipynb runs headless (nbclient, kernel python3) on this host's CPU without a cell
error, in a copy of the examples folder (as copy-examples gives a JupyterLab user); it is committed clean."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
for _module in ("torch", "transformers", "onnx", "onnxruntime", "nbclient", "nbformat", "ipykernel"):
    pytest.importorskip(_module, reason=f"the notebook test needs {_module} (see examples/README.md)")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
NOTEBOOK = "finetune_bert.ipynb"
CELL_TIMEOUT_S = 300
WHOLE_RUN_BUDGET_S = 180  # the brief: under ~3 minutes on a CPU with the tiny model


def test_the_committed_notebook_has_no_outputs():
    notebook = json.loads((EXAMPLES / NOTEBOOK).read_text(encoding="utf-8"))
    code = [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code, "the notebook has no code cells"
    assert all(cell["outputs"] == [] and cell["execution_count"] is None for cell in code)
    assert notebook["metadata"]["kernelspec"]["name"] == "python3"
    tagged = [cell for cell in code if "parameters" in cell.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1 and "TINY = " in "".join(tagged[0]["source"])


def test_the_notebook_runs_on_the_cpu(tmp_path):
    import nbformat
    from nbclient import NotebookClient

    work = tmp_path / "examples"
    work.mkdir()
    for name in (NOTEBOOK, "finetune_bert.py", "serve.py"):
        shutil.copy2(EXAMPLES / name, work / name)
    shutil.copytree(EXAMPLES / "data", work / "data")
    notebook = nbformat.read(work / NOTEBOOK, as_version=4)
    client = NotebookClient(
        notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources={"metadata": {"path": str(work)}}
    )
    # No GPU, whatever the host has (the tiny, offline path); `python -m verify` from this checkout.
    env = {k: v for k, v in os.environ.items() if k != "TENSORBOARD_LOGDIR"}
    env |= {"CUDA_VISIBLE_DEVICES": "", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    start = time.monotonic()
    client.execute(env=env)  # raises CellExecutionError, with the cell and its traceback, on any cell error
    seconds = time.monotonic() - start
    print(f"notebook ran in {seconds:.0f} s")

    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.get("output_type") == "error"]
    text = "".join(output.get("text", "") for output in outputs if output.get("output_type") == "stream")
    assert "verify gpu: SKIP" in text or "verify is not installed" in text, text[:2000]
    assert "continuing on the CPU with the tiny model" in text
    assert "macro-F1" in text and "max |logits - eager|" in text
    assert text.count('"label"') == 2, text[-2000:]
    assert (work / "bert-finetuned-notebook" / "model.onnx").is_file()
    assert list((work / "bert-finetuned-notebook" / "runs").glob("*/events.out.tfevents.*")), (
        "no TensorBoard log"
    )
    assert seconds < WHOLE_RUN_BUDGET_S
