"""Model folders: written atomically, verified at load, never executing code from the folder.

Format 2 (written now):
    config.json          model name, format, params, fit info, and `files`: the size and
                         SHA-256 of every other file, checked at load
    users.json, items.json   the id maps
    weights.safetensors  tensors from `_state()`; its metadata names the model. A 2-D float
                         tensor whose CSR form is smaller (e.g. the factors of a model
                         trained at `density` < 1) is stored as NAME.crow_indices,
                         NAME.col_indices (int16 when it fits) and NAME.values, its shape in
                         the metadata entry `sparse`; loading makes it dense again, but for
                         the tensors a model names in `sparse_state` (factor tables), which
                         it receives as scipy CSR and may keep so (recsys.factor_table)
    extras.json          JSON state from `_extras()` (vocabularies, level names, encoder identity)
    features/NAME/       feature tables the model keeps (`features_`), see FeatureTable.save
    seen.npz             optional: the users' seen items (usually the training matrix)
Format 1 (config.json, users.json, items.json, weights.safetensors[, seen.npz]) still loads.
Every way a folder can be damaged (missing or truncated file, invalid JSON, an edited model
name, factor rows that do not match the id maps) is one RecsysError naming the file.
"""

from __future__ import annotations

import hashlib
import json
from io import BytesIO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from recsys.atomic import atomic_dir, check_folder_target, write_bytes
from recsys.data.features import FeatureTable
from recsys.data.idmap import IdMap
from recsys.data.interactions import Interactions
from recsys.errors import RecsysError

if TYPE_CHECKING:
    from recsys.models.base import BaseRecommender

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
CONFIG, USERS, ITEMS = "config.json", "users.json", "items.json"
WEIGHTS, EXTRAS, FEATURES, SEEN = "weights.safetensors", "extras.json", "features", "seen.npz"
# the side inputs a model may keep as feature tables, and the id map their rows follow
FEATURE_TABLES = {"user_features": "users", "item_features": "items", "item_text": "items"}


def check_model_target(path: str | Path) -> None:
    """Refuse, before any training, an output path that is a file or a folder of other files."""
    check_folder_target(path, CONFIG)


def save_model(model: BaseRecommender, path: str | Path, seen: Interactions | None = None) -> None:
    """Write `model` (and optionally the `seen` items) as a format-2 folder at `path`.

    The folder is built beside `path` and swapped in as a whole: an interruption at any point
    leaves the previous model or the new one, never a mix. An existing `path` must be a model
    folder or empty (a folder of other files is refused, not overwritten).
    """
    model._check_fitted()
    if seen is not None:
        _check_seen_shape(seen.matrix.shape, model, "the seen items")
    state = {k: v.detach().cpu().contiguous() for k, v in model._state().items()}
    tensors, shapes = pack_sparse(state)
    extras = model._extras()
    with atomic_dir(path, marker=CONFIG) as tmp:
        model.user_map_.save(tmp / USERS)
        model.item_map_.save(tmp / ITEMS)
        metadata = {"model": model.name, **({"sparse": json.dumps(shapes)} if shapes else {})}
        save_file(tensors, str(tmp / WEIGHTS), metadata=metadata)
        (tmp / EXTRAS).write_text(json.dumps(extras))
        for name, table in getattr(model, "features_", {}).items():
            table.save(tmp / FEATURES / name)
        if seen is not None:
            sp.save_npz(tmp / SEEN, seen.matrix.tocsr())
        config = {"model": model.name, **({"preset": model.preset} if model.preset else {}),
                  "format": FORMAT_VERSION, "params": model.get_params(),
                  "fit_info": getattr(model, "fit_info_", {}), "files": _manifest(tmp)}
        (tmp / CONFIG).write_text(json.dumps(config, indent=2, default=str))


def pack_sparse(state: dict[str, torch.Tensor]
                ) -> tuple[dict[str, torch.Tensor], dict[str, list[int]]]:
    """(tensors to write, {name: shape} of those written as CSR): each 2-D floating tensor
    whose CSR form (int16 column indices below 32768 columns, int32 row pointers) takes fewer
    bytes than the dense one becomes three tensors NAME.crow_indices, NAME.col_indices and
    NAME.values; the rest are kept as they are."""
    tensors, shapes = {}, {}
    for name, tensor in state.items():
        if tensor.ndim != 2 or not tensor.is_floating_point():
            tensors[name] = tensor
            continue
        rows, cols = tensor.shape
        nnz = int(torch.count_nonzero(tensor))
        col_type = torch.int16 if cols <= torch.iinfo(torch.int16).max else torch.int32
        row_type = torch.int32 if nnz <= torch.iinfo(torch.int32).max else torch.int64
        sparse_bytes = (nnz * (tensor.element_size() + col_type.itemsize)
                        + (rows + 1) * row_type.itemsize)
        if sparse_bytes >= tensor.numel() * tensor.element_size():
            tensors[name] = tensor
            continue
        row, col = torch.nonzero(tensor, as_tuple=True)  # row-major order, as CSR stores
        crow = torch.zeros(rows + 1, dtype=torch.int64)
        crow[1:] = torch.cumsum(torch.bincount(row, minlength=rows), 0)
        tensors[f"{name}.crow_indices"] = crow.to(row_type)
        tensors[f"{name}.col_indices"] = col.to(col_type)
        tensors[f"{name}.values"] = tensor[row, col]
        shapes[name] = [rows, cols]
    return tensors, shapes


def unpack_sparse(tensors: dict[str, torch.Tensor], shapes: dict[str, list[int]], file: Path,
                  keep: frozenset[str] = frozenset()) -> dict[str, torch.Tensor | sp.csr_matrix]:
    """The state `pack_sparse` wrote: the tensors named in `keep` as scipy CSR matrices
    (float32 values, int32 indices) if they were written as CSR, every other tensor dense.
    Raises RecsysError naming `file` for parts that are missing or do not form a CSR matrix."""
    state: dict[str, torch.Tensor | sp.csr_matrix] = dict(tensors)
    for name, shape in shapes.items():
        parts = [f"{name}.{part}" for part in ("crow_indices", "col_indices", "values")]
        missing = [p for p in parts if p not in state]
        if missing:
            raise RecsysError(f"{file}: sparse tensor {name!r} lacks {', '.join(missing)}")
        crow, col, values = (state.pop(p) for p in parts)
        what = f"{file}: sparse tensor {name!r}"
        _check_csr(crow, col, values, shape, what)
        state[name] = (_csr if name in keep else _dense)(crow, col, values, shape)
    return state


def _check_csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: list[int],
               what: str) -> None:
    """RecsysError naming `what` unless the parts form a CSR matrix of `shape` (checked in
    their stored integer types: no 64-bit copies of the indices)."""
    if (not isinstance(shape, list) or len(shape) != 2 or crow.ndim != 1 or col.ndim != 1
            or values.ndim != 1 or not values.is_floating_point()
            or crow.is_floating_point() or col.is_floating_point()):
        raise RecsysError(f"{what}: parts of the wrong kind for a CSR matrix of shape {shape}")
    rows, cols = shape
    crow, col = crow.numpy(), col.numpy()
    if (len(crow) != rows + 1 or int(crow[0]) != 0 or int(crow[-1]) != len(col)
            or len(col) != len(values) or bool((np.diff(crow) < 0).any())
            or (len(col) and (int(col.min()) < 0 or int(col.max()) >= cols))):
        raise RecsysError(f"{what}: row pointers or column indices do not form a CSR matrix "
                          f"of shape {rows} x {cols} with {len(values)} values")


def _dense(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: list[int]
           ) -> torch.Tensor:
    """The dense [rows, cols] tensor of checked CSR parts."""
    rows, cols = shape
    dense = torch.zeros(rows, cols, dtype=values.dtype)
    dense[torch.repeat_interleave(torch.arange(rows), crow.long().diff()), col.long()] = values
    return dense


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: list[int]
         ) -> sp.csr_matrix:
    """The scipy CSR matrix of checked CSR parts: float32 values, int32 indices (int64 past
    2^31 - 1 values)."""
    index = np.int32 if len(values) <= np.iinfo(np.int32).max else np.int64
    return sp.csr_matrix((values.float().numpy(), col.numpy().astype(index),
                          crow.numpy().astype(index, copy=False)), shape=tuple(shape))


def save_seen(path: str | Path, seen: Interactions) -> None:
    """Add or replace the seen items of a saved model folder (one atomic file write)."""
    path = Path(path)
    if not (path / CONFIG).exists():
        raise RecsysError(f"{path}: not a model folder (no {CONFIG})")
    buffer = BytesIO()
    sp.save_npz(buffer, seen.matrix.tocsr())
    write_bytes(path / SEEN, buffer.getvalue())


def load_model(path: str | Path) -> BaseRecommender:
    """The model saved in folder `path` (format 1 or 2), verified file by file."""
    path = Path(path)
    config = read_config(path)
    model = _instantiate(path, config)
    if config["format"] >= 2:
        _verify_files(path, config)
    model.user_map_ = _read_idmap(path / USERS)
    model.item_map_ = _read_idmap(path / ITEMS)
    state = _read_weights(path / WEIGHTS, config, getattr(model, "sparse_state", frozenset()))
    _check_rows(path, model, state)
    try:
        model._load_state(state)
    except KeyError as exc:
        raise RecsysError(f"{path / WEIGHTS}: no tensor {exc} for model {model.name!r} "
                          f"(holds {', '.join(state) or 'none'})") from exc
    model.fit_info_ = config.get("fit_info", {})
    model.features_ = {}
    if config["format"] >= 2:
        try:
            model._load_extras(_read_json(path / EXTRAS))
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, RecsysError):
                raise
            raise RecsysError(f"{path / EXTRAS}: not the state of model {model.name!r} "
                              f"({type(exc).__name__}: {_reason(exc)})") from exc
        model.features_ = _read_features(path, model)
    return model


def load_seen(path: str | Path, model: BaseRecommender) -> Interactions | None:
    """The seen items stored in model folder `path`, or None if there are none."""
    file = Path(path) / SEEN
    if not file.exists():
        return None
    try:
        matrix = sp.load_npz(file).tocsr()
    except Exception as exc:  # noqa: BLE001 (zip, numpy and scipy each raise their own)
        raise RecsysError(f"{file}: not a readable seen-item matrix ({_reason(exc)})") from exc
    _check_seen_shape(matrix.shape, model, str(file))
    return Interactions(matrix.astype(np.float32), model.user_map_, model.item_map_)


def read_config(path: Path) -> dict[str, Any]:
    """config.json of folder `path`, checked for the entries every format has."""
    if not path.exists():
        raise RecsysError(f"{path}: no such model folder")
    if not (path / CONFIG).is_file():
        raise RecsysError(f"{path}: not a model folder (no {CONFIG})")
    config = _read_json(path / CONFIG)
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        raise RecsysError(f"{path / CONFIG}: no model name (the 'model' entry)")
    fmt = config.setdefault("format", 1)
    if fmt not in READABLE_FORMATS:
        raise RecsysError(f"{path / CONFIG}: format {fmt!r} is not one this version reads "
                          f"({', '.join(map(str, READABLE_FORMATS))})")
    if not isinstance(config.get("params", {}), dict):
        raise RecsysError(f"{path / CONFIG}: 'params' is not a mapping")
    return config


def _instantiate(path: Path, config: dict) -> BaseRecommender:
    from recsys.models.base import create_model

    try:
        model = create_model(config["model"], **config.get("params", {}))
    except (RecsysError, TypeError, ValueError) as exc:
        raise RecsysError(f"{path / CONFIG}: {_reason(exc)}") from exc
    if isinstance(config.get("preset"), str):
        model.preset = config["preset"]
    return model


def _verify_files(path: Path, config: dict) -> None:
    """Every file listed in config.json is present with its saved size and SHA-256."""
    files = config.get("files")
    if not isinstance(files, dict):
        raise RecsysError(f"{path / CONFIG}: no 'files' entry (a format-2 folder lists its files)")
    for name, expected in files.items():
        file = path / name
        if not file.is_file():
            raise RecsysError(f"{file}: missing")
        size = file.stat().st_size
        if size != expected.get("bytes"):
            raise RecsysError(f"{file}: {size} bytes, expected {expected.get('bytes')} "
                              "(truncated or replaced)")
        if _sha256(file) != expected.get("sha256"):
            raise RecsysError(f"{file}: content differs from the saved model (SHA-256 mismatch)")


def _manifest(folder: Path) -> dict[str, dict]:
    """Size and SHA-256 of every file under `folder` but config.json and seen.npz (the seen
    items may be replaced later by `save_seen`)."""
    return {f.relative_to(folder).as_posix(): {"bytes": f.stat().st_size, "sha256": _sha256(f)}
            for f in sorted(folder.rglob("*")) if f.is_file() and f.name not in (CONFIG, SEEN)}


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with file.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(file: Path) -> Any:
    if not file.is_file():
        raise RecsysError(f"{file}: missing")
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RecsysError(f"{file}: not valid JSON ({_reason(exc)})") from exc


def _read_idmap(file: Path) -> IdMap:
    data = _read_json(file)
    try:
        return IdMap.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise RecsysError(f"{file}: not an id map ({_reason(exc)})") from exc


def _read_weights(file: Path, config: dict, keep: frozenset[str]
                  ) -> dict[str, torch.Tensor | sp.csr_matrix]:
    """The tensors of `file` (see `unpack_sparse` for `keep`)."""
    if not file.is_file():
        raise RecsysError(f"{file}: missing")
    try:
        with safe_open(str(file), framework="pt") as fh:
            metadata = fh.metadata() or {}
            state = {name: fh.get_tensor(name) for name in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise RecsysError(f"{file}: not a readable safetensors file ({_reason(exc)})") from exc
    saved_by = metadata.get("model")
    if config["format"] >= 2 and saved_by != config["model"]:
        raise RecsysError(f"{file.parent / CONFIG}: names model {config['model']!r} but "
                          f"{WEIGHTS} was saved by model {saved_by!r}")
    try:
        shapes = json.loads(metadata.get("sparse", "{}"))
    except json.JSONDecodeError as exc:
        raise RecsysError(f"{file}: unreadable 'sparse' metadata ({_reason(exc)})") from exc
    return unpack_sparse(state, shapes, file, keep)


def _check_rows(path: Path, model: BaseRecommender, state: dict[str, torch.Tensor]) -> None:
    """Tensors with a row per user or item must have exactly that many rows."""
    sizes = {"users": (len(model.user_map_), USERS), "items": (len(model.item_map_), ITEMS)}
    for name, axis in model.state_rows.items():
        if name not in state:
            raise RecsysError(f"{path / WEIGHTS}: no tensor {name!r} for model {model.name!r} "
                              f"(holds {', '.join(state) or 'none'})")
        rows, source = sizes[axis]
        if state[name].ndim == 0 or state[name].shape[0] != rows:
            got = state[name].shape[0] if state[name].ndim else 0
            raise RecsysError(f"{path / WEIGHTS}: {name} has {got} rows, but {source} lists "
                              f"{rows} {axis}")


def _read_features(path: Path, model: BaseRecommender) -> dict[str, FeatureTable]:
    """The tables under features/, each checked against the id map its rows follow."""
    folder = path / FEATURES
    tables = {}
    for sub in sorted(folder.iterdir()) if folder.is_dir() else []:
        if sub.name not in FEATURE_TABLES:
            raise RecsysError(f"{sub}: not a feature table this version knows "
                              f"({', '.join(FEATURE_TABLES)})")
        tables[sub.name] = FeatureTable.load(sub)
        ids, source = ((model.user_map_, USERS) if FEATURE_TABLES[sub.name] == "users"
                       else (model.item_map_, ITEMS))
        if tables[sub.name].ids != ids:
            raise RecsysError(f"{sub}: rows do not follow {source}")
    return tables


def _check_seen_shape(shape: tuple[int, int], model: BaseRecommender, what: str) -> None:
    expected = (len(model.user_map_), len(model.item_map_))
    if tuple(shape) != expected:
        raise RecsysError(f"{what}: seen-item matrix has shape {tuple(shape)}, the model has "
                          f"{expected[0]} users x {expected[1]} items")


def _reason(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text
