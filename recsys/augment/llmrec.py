"""LLMRec graph augmentation (Wei et al., WSDM 2024): triples, item attributes, user profiles.

For each sampled user, a base model's top-N unseen items are the candidates; an augmenter
names one the user would likely enjoy (i+) and one they would not (i-), giving a BPR triple
(u, i+, i-) that training adds to a fraction of each batch. Item attributes and user
profiles are text, embedded later as side features. Two augmenters:

- `offline`: text-embedding similarity between the mean of the user's history vectors and
  each candidate's vector (most similar = i+, least = i-); profiles list the history's text;
- `llm`: a chat model answers the prompts in recsys/augment/prompts (edges, item attributes,
  user profiles); unusable answers are counted and skipped (a user without an answer gets
  no triple, an item or user without one keeps its offline text).

An augmentation folder (written atomically) holds:

- `manifest.json`: format, augmenter, base model, settings, encoder identity, LLM settings,
  per-task call statistics and counts;
- `triples.csv`: user_id, pos_item_id, neg_item_id (external ids);
- `item_text.csv`: item_id, text (the given text, plus generated attributes where answered);
- `user_text.csv`: user_id, text (the profile of every user with training items).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys.atomic import atomic_dir
from recsys.data.features import FeatureTable, first_repeat
from recsys.data.idmap import IdMap
from recsys.data.interactions import Interactions
from recsys.data.io import check_ids, require_columns
from recsys.errors import DataError, RecsysError

FORMAT = 1
MANIFEST, TRIPLES, ITEM_TEXT, USER_TEXT = "manifest.json", "triples.csv", "item_text.csv", "user_text.csv"
AUGMENTERS = ("offline", "llm")
LLM_TASKS = ("edges", "items", "users")
TIED_SIMILARITY = 1e-6  # cosine spread below which a user's candidates count as equally similar
_LIKED = re.compile(r"(?<!dis)liked\W*(\d+)", re.IGNORECASE)
_DISLIKED = re.compile(r"disliked\W*(\d+)", re.IGNORECASE)
EDGE_SCHEMA = {"type": "object", "properties": {"liked": {"type": "integer"},
                                               "disliked": {"type": "integer"}},
               "required": ["liked", "disliked"], "additionalProperties": False}


def item_texts(table: FeatureTable | None, item_map: IdMap) -> np.ndarray:
    """(n_items,) text per item of `item_map` from an item text table (`--item-text`,
    `Interactions.item_text`); an item without text is named by its id."""
    texts = np.asarray([str(i) for i in item_map.ids], dtype=object)
    if table is not None:
        values = table.reindex(item_map)["text"].values
        has = values != ""
        texts[has] = values[has]
    return texts


def history_lines(train: Interactions, texts: np.ndarray, users: np.ndarray, limit: int,
                  seed: int) -> list[str]:
    """Per user, up to `limit` of their items' texts as '- text' lines: the latest by time
    when the data has timestamps, else a random sample (seeded)."""
    rng = np.random.default_rng(seed)
    out = []
    for u in users:
        lo, hi = train.matrix.indptr[u], train.matrix.indptr[u + 1]
        items = train.matrix.indices[lo:hi]
        if train.timestamps is not None:
            order = np.argsort(-train.timestamps.data[lo:hi], kind="stable")[:limit]
        else:
            order = rng.permutation(len(items))[:limit]
        out.append("\n".join(f"- {texts[i]}" for i in items[order]))
    return out


def parse_edge(text: str, n: int) -> tuple[int, int] | None:
    """(liked, disliked) 0-based candidate positions from 'liked: N, disliked: M' (1-based)."""
    liked, disliked = _LIKED.search(text), _DISLIKED.search(text)
    if liked is None or disliked is None:
        return None
    a, b = int(liked.group(1)) - 1, int(disliked.group(1)) - 1
    if a == b or not (0 <= a < n and 0 <= b < n):
        return None
    return a, b


def parse_phrase(text: str, limit: int = 300) -> str | None:
    """The answer's first non-empty line, at most `limit` characters; None if empty."""
    line = next((s.strip() for s in text.splitlines() if s.strip()), "")
    return line[:limit] or None


@dataclass
class Augmentation:
    """Triples as indices into the training data's maps, and text per item and user."""

    triples: np.ndarray          # (m, 3) int64: user, liked item, disliked item
    item_text: np.ndarray        # (n_items,) str
    user_text: np.ndarray        # (n_users,) str
    manifest: dict[str, Any] = field(default_factory=dict)

    def save(self, path: str | Path, user_map: IdMap, item_map: IdMap) -> None:
        """Write the folder described in this module's docstring, atomically."""
        u, i, j = self.triples.T
        with atomic_dir(path, marker=MANIFEST) as tmp:
            pd.DataFrame({"user_id": user_map.to_ids(u), "pos_item_id": item_map.to_ids(i),
                          "neg_item_id": item_map.to_ids(j)}).to_csv(tmp / TRIPLES, index=False)
            pd.DataFrame({"item_id": item_map.ids, "text": self.item_text}).to_csv(
                tmp / ITEM_TEXT, index=False)
            pd.DataFrame({"user_id": user_map.ids, "text": self.user_text}).to_csv(
                tmp / USER_TEXT, index=False)
            (tmp / MANIFEST).write_text(json.dumps({"format": FORMAT, **self.manifest}, indent=2))

    @classmethod
    def load(cls, path: str | Path, user_map: IdMap, item_map: IdMap) -> Augmentation:
        """Read a folder written by `save` against the training data's id maps.

        An id the maps do not know is an error naming the file, row and id: the augmentation
        was made from other data.
        """
        path = Path(path)
        if not (path / MANIFEST).is_file():
            raise RecsysError(f"{path}: not an augmentation folder (no {MANIFEST})")
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise DataError(f"{path / MANIFEST}: not valid JSON ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            found = manifest.get("format") if isinstance(manifest, dict) else None
            raise RecsysError(f"{path}: augmentation format {found!r}, expected {FORMAT}")

        def lookup(frame: pd.DataFrame, col: str, idmap: IdMap, file: str) -> np.ndarray:
            check_ids(frame[col], col, str(path / file))
            index = idmap.index_of(frame[col])
            if (index < 0).any():
                row = int(np.argmax(index < 0))
                raise DataError(f"{path / file}: {col} {frame[col].iloc[row]!r} at row {row + 1} "
                                "is not in the training data")
            return index

        triples = _read_text_csv(path / TRIPLES, ["user_id", "pos_item_id", "neg_item_id"])
        frame = triples
        triples = np.stack([lookup(frame, c, m, TRIPLES) for c, m in (
            ("user_id", user_map), ("pos_item_id", item_map), ("neg_item_id", item_map))], 1) \
            if len(frame) else np.zeros((0, 3), dtype=np.int64)
        same = triples[:, 1] == triples[:, 2]
        if same.any():  # a pair that prefers an item to itself teaches nothing but noise
            row = int(np.argmax(same))
            raise DataError(f"{path / TRIPLES}: row {row + 1} likes and dislikes the same item "
                            f"{frame['pos_item_id'].iloc[row]!r}")

        def texts(file: str, col: str, idmap: IdMap) -> np.ndarray:
            frame = _read_text_csv(path / file, [col, "text"])
            index = lookup(frame, col, idmap, file)
            repeat = first_repeat(index)
            if repeat is not None:  # two texts for one id: neither may win silently
                first, row = repeat
                raise DataError(f"{path / file}: {col} {frame[col].iloc[row]!r} appears twice "
                                f"(rows {first + 1} and {row + 1}); one text per id")
            out = np.asarray([str(i) for i in idmap.ids], dtype=object)
            out[index] = frame["text"].to_numpy(dtype=object)
            return out

        return cls(triples.astype(np.int64), texts(ITEM_TEXT, "item_id", item_map),
                   texts(USER_TEXT, "user_id", user_map), manifest)


def _read_text_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    """Every cell of an augmentation CSV as text (`NA` is an id like any other); a missing
    file or column is a DataError naming it."""
    if not path.is_file():
        raise DataError(f"{path}: no such file (an augmentation folder holds {TRIPLES}, "
                        f"{ITEM_TEXT} and {USER_TEXT})")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]})") from None
    require_columns(frame, columns, str(path))
    return frame


def candidates(base, train: Interactions, users: np.ndarray, n: int) -> np.ndarray:
    """(len(users), n) item indices: the base model's top-n unseen items per user."""
    top, _ = base.recommend(users, n, exclude=train)
    return top.astype(np.int64)


def offline_pick(train: Interactions, item_vectors: np.ndarray, users: np.ndarray,
                 cands: np.ndarray) -> np.ndarray:
    """(n, 3) triples user, liked item, disliked item: the candidates whose text vectors are
    most and least similar (cosine) to the mean vector of the user's training items. A user
    whose candidates are all equally similar (e.g. identical or empty texts) shows no
    preference and gets no triple, so n <= len(users)."""
    history = sp.csr_matrix(train.matrix[users], copy=True)
    history.data[:] = 1.0
    profile = np.asarray(history @ item_vectors)
    profile /= np.maximum(np.linalg.norm(profile, axis=1, keepdims=True), 1e-12)
    sims = np.einsum("ud,und->un", profile, item_vectors[cands])
    rows = np.arange(len(users))
    triples = np.column_stack([users, cands[rows, sims.argmax(1)], cands[rows, sims.argmin(1)]])
    return triples[sims.max(1) - sims.min(1) > TIED_SIMILARITY]


def sample_users(train: Interactions, n: int | None, n_candidates: int, seed: int) -> np.ndarray:
    """`n` users drawn without replacement (all when None) among those with training items and
    at least `n_candidates` unseen items; an error if there are none."""
    users = np.flatnonzero((train.user_degree > 0) & (train.n_items - train.user_degree >= n_candidates))
    if len(users) == 0:
        raise RecsysError(f"no user has training items and {n_candidates} unseen items: "
                          "use fewer candidates")
    if n is not None and n < len(users):
        users = np.sort(np.random.default_rng(seed).choice(users, n, replace=False))
    return users


def augment(train: Interactions, item_text: np.ndarray, base, *, augmenter: str = "offline",
            encoder=None, client=None, n_candidates: int = 10, n_users: int | None = None,
            history: int = 10, tasks: tuple[str, ...] = LLM_TASKS, seed: int = 0) -> Augmentation:
    """Augment `train` (the base model's id maps) with triples and text, as described above.

    `item_text`: (n_items,) strings; `base`: a fitted model with `recommend`; `encoder`: a
    TextEncoder (offline); `client`: an LLMClient (llm) asked for `tasks`.
    """
    if augmenter not in AUGMENTERS:
        raise RecsysError(f"unknown augmenter {augmenter!r}; choose one of {', '.join(AUGMENTERS)}")
    if len(item_text) != train.n_items:
        raise RecsysError(f"{len(item_text)} item texts for {train.n_items} items")
    if n_candidates < 2:
        raise RecsysError(f"candidates must be at least 2 (one liked, one disliked), got {n_candidates}")
    users = sample_users(train, n_users, n_candidates, seed)
    cands = candidates(base, train, users, n_candidates)
    all_users = np.flatnonzero(train.user_degree > 0)
    user_text = np.full(train.n_users, "", dtype=object)
    user_text[all_users] = [f"Interacted with:\n{h}" for h in
                            history_lines(train, item_text, all_users, history, seed)]
    item_text = np.asarray(item_text, dtype=object).copy()
    manifest: dict[str, Any] = {"augmenter": augmenter, "candidates": n_candidates,
                                "users_sampled": int(len(users)), "history": history, "seed": seed}
    if augmenter == "offline":
        if encoder is None:
            raise RecsysError("the offline augmenter needs a text encoder")
        triples = offline_pick(train, encoder.encode(item_text), users, cands)
        manifest["users_without_preference"] = int(len(users) - len(triples))
        manifest["encoder"] = encoder.identity()
    else:
        if client is None:
            raise RecsysError("the llm augmenter needs an LLM client")
        unknown = sorted(set(tasks) - set(LLM_TASKS))
        if unknown:
            raise RecsysError(f"unknown LLM task(s) {', '.join(unknown)}; tasks: {', '.join(LLM_TASKS)}")
        triples, manifest["llm"] = _llm_augment(client, train, item_text, user_text, users, cands,
                                                history, tasks, seed)
    manifest["counts"] = {"triples": int(len(triples)), "users": int(train.n_users),
                          "items": int(train.n_items)}
    return Augmentation(triples.astype(np.int64), item_text, user_text, manifest)


def _llm_augment(client, train, item_text, user_text, users, cands, history, tasks, seed):
    """Ask the LLM for each task; fills item_text and user_text in place; returns the triples
    and a manifest entry (settings and per-task statistics)."""
    from recsys.augment.llm import render

    s = client.settings
    info: dict[str, Any] = {"base_url": s.base_url, "model": s.model, "temperature": s.temperature,
                            "top_p": s.top_p, "max_tokens": s.max_tokens, "tasks": list(tasks),
                            "stats": {}}
    triples = np.zeros((0, 3), dtype=np.int64)
    lines = history_lines(train, item_text, users, history, seed)
    if "edges" in tasks:
        n = cands.shape[1]
        prompts = [render("edge", history=h, candidates="\n".join(
            f"{k + 1}. {item_text[i]}" for k, i in enumerate(row)))
            for h, row in zip(lines, cands, strict=True)]
        picks, _, stats = client.ask(prompts, lambda t: parse_edge(t, n), schema=EDGE_SCHEMA,
                                     desc="llm edges")
        ok = np.asarray([p is not None for p in picks], dtype=bool)
        pos = np.asarray([p for p in picks if p is not None], dtype=np.int64).reshape(-1, 2)
        rows = np.flatnonzero(ok)
        triples = np.column_stack([users[ok], cands[rows, pos[:, 0]], cands[rows, pos[:, 1]]])
        info["stats"]["edges"] = stats.as_dict()
    if "items" in tasks:
        prompts = [render("item_attributes", item=t) for t in item_text]
        answers, _, stats = client.ask(prompts, parse_phrase, desc="llm item attributes")
        for i, a in enumerate(answers):
            if a is not None:
                item_text[i] = f"{item_text[i]}. Attributes: {a}"
        info["stats"]["items"] = stats.as_dict()
    if "users" in tasks:
        prompts = [render("user_profile", history=h) for h in lines]
        answers, _, stats = client.ask(prompts, parse_phrase, desc="llm user profiles")
        for u, a in zip(users, answers, strict=True):
            if a is not None:
                user_text[u] = a
        info["stats"]["users"] = stats.as_dict()
    return triples, info
