"""Other LLM compressors on the same weights, run as external programs from a user-supplied checkout.

    python -m bench --peer llama-zip=CHECKOUT[,PYTHON] --peer nacrith=CHECKOUT[,PYTHON] ...

* llama-zip (https://github.com/AlexBuz/llama-zip): ``PYTHON CHECKOUT/llama_zip.py GGUF -c`` (stdin to
  stdout) and ``-d``, with its defaults (the model's whole context, no window overlap).
* Nacrith (https://github.com/st4ck/Nacrith, its LLM coder, not Nacrith-CPU): ``PYTHON CHECKOUT/cli.py
  compress IN OUT`` and ``decompress OUT IN``, with its defaults (n-gram, LZP, adaptive head). It finds
  its model as ``smollm2-135m.gguf`` beside cli.py: the bench links memzip's GGUF there if that name is
  free (and says so). It also loads its tokenizer from the Hugging Face hub id HuggingFaceTB/SmolLM2-135M;
  with no hub reachable, the bench gives it an offline cache (HF_HOME in a temporary folder) holding the
  GGUF's own tokenizer and model configuration (memzip's caches), the same vocabulary.

Both need llama-cpp-python (built from source: ``CMAKE_ARGS=-DGGML_NATIVE=ON pip install llama-cpp-python``,
20-40 minutes on 2 cores) in PYTHON's environment; Nacrith also torch, transformers and numpy. The
weights are memzip's packaged GGUF file (SmolLM2-135M-Instruct, Q4_1), so every row of the table uses
the same model. Nothing of the peers is part of memzip.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PEERS = ("llama-zip", "nacrith")


def parse(spec: str) -> tuple[str, Path, str]:
    """'NAME=CHECKOUT[,PYTHON]' -> (name, checkout, python)."""
    name, _, rest = spec.partition("=")
    if name not in PEERS or not rest:
        raise SystemExit(f"bench: --peer takes NAME=CHECKOUT[,PYTHON] with NAME one of {PEERS}")
    checkout, _, python = rest.partition(",")
    return name, Path(checkout).resolve(), python or sys.executable


def gguf_path() -> Path:
    from memzip.model import DEFAULT_MODEL_ID, PACKAGED_MODELS

    return PACKAGED_MODELS[DEFAULT_MODEL_ID].locate()


def _offline_hub(home: Path) -> dict:
    """Environment for a hub-less run: HF_HOME with the SmolLM2 tokenizer under the hub id Nacrith asks for."""
    import shutil

    from memzip.model import DEFAULT_MODEL_ID, packaged_float_dir, packaged_tokenizer_dir

    repo = home / "hub" / "models--HuggingFaceTB--SmolLM2-135M"
    snapshot = repo / "snapshots" / "memzip"
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text("memzip")
    for f in packaged_tokenizer_dir(DEFAULT_MODEL_ID, lambda _t: None).iterdir():
        shutil.copy(f, snapshot / f.name)
    shutil.copy(packaged_float_dir(DEFAULT_MODEL_ID, lambda _t: None) / "config.json", snapshot / "config.json")
    return {"HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _run(cmd: list[str], stdin: bytes | None = None, cwd: Path | None = None, env: dict | None = None) -> bytes:
    done = subprocess.run(cmd, input=stdin, capture_output=True, cwd=cwd, timeout=6 * 3600,
                          env=None if env is None else {**os.environ, **env})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd[:3]))} failed: {done.stderr.decode(errors='replace')[-500:]}")
    return done.stdout


def run(name: str, checkout: Path, python: str, data: bytes, say=print) -> dict:
    """Compress and decompress ``data`` with a peer: output size, seconds each way, exact or not."""
    gguf = gguf_path()
    with tempfile.TemporaryDirectory() as tmp:
        source, packed, restored = Path(tmp) / "in", Path(tmp) / "out", Path(tmp) / "back"
        source.write_bytes(data)
        if name == "llama-zip":
            script = str(checkout / "llama_zip.py")
            t0 = time.perf_counter()
            blob = _run([python, script, str(gguf), "-c"], data)
            t1 = time.perf_counter()
            back = _run([python, script, str(gguf), "-d"], blob)
            t2 = time.perf_counter()
        else:
            model = checkout / "smollm2-135m.gguf"
            if not model.exists():
                os.symlink(gguf, model)
                say(f"bench: linked {model} -> {gguf} (Nacrith finds its model there)")
            script = str(checkout / "cli.py")
            env = _offline_hub(Path(tmp) / "hf")
            t0 = time.perf_counter()
            _run([python, script, "compress", str(source), str(packed)], cwd=checkout, env=env)
            t1 = time.perf_counter()
            _run([python, script, "decompress", str(packed), str(restored)], cwd=checkout, env=env)
            t2 = time.perf_counter()
            blob, back = packed.read_bytes(), restored.read_bytes()
    return {"output_bytes": len(blob), "compress_s": t1 - t0, "decompress_s": t2 - t1, "exact": back == data}
