"""Two-tower retrieval with side features and self-supervised feature masking.

Query tower: user id embedding, user features, mean-pooled embeddings of the user's training
items. Item tower: item id embedding, item features. Both end in an MLP and L2
normalisation; a score is a cosine over `temperature`. The main loss is a batch softmax over
the batch's items (plus optional uniform negatives) with logQ correction (Yi et al., RecSys
2019: logit - log q_j, q_j the item's expected count among the candidates). With `ssl=rfm` or
`cfm`, an InfoNCE loss between two complementary feature-masked views of items drawn
uniformly from the catalogue is added with weight `alpha` (Yao et al., CIKM 2021; see
recsys.augment.feature_mask).

After training, both towers run once over all users and all catalogue items: the model is a
factor model, so evaluation, batch jobs and serving use one matrix product. Items without
training interactions read the shared unknown-id row, so cold-start items with features are
scored from their features alone. `user_vectors` encodes users the model never saw from
request-time features and/or a history.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from annotated_types import MinLen
from torch import nn

from recsys.augment.feature_mask import (
    cfm_groups,
    cfm_masks,
    drop_values,
    field_codes,
    mi_matrix,
    rfm_masks,
)
from recsys.data.features import FeatureTable
from recsys.data.idmap import IdMap
from recsys.data.interactions import Interactions
from recsys.data.sampling import PairSampler
from recsys.errors import RecsysError
from recsys.losses.contrastive import first_occurrence, info_nce
from recsys.models.base import register
from recsys.models.params import NonNegative, Positive, Probability
from recsys.models.space import Float, Int
from recsys.models.torch_model import TorchRecommender, auto_batch_size
from recsys.nn.towers import Tower, encodable_columns

log = logging.getLogger("recsys")

CHUNK = 8192  # rows per forward pass when the towers encode the whole catalogue


class TwoTowerModule(nn.Module):
    """The query and item towers. Id rows are index + 1; row 0 is the unknown id."""

    def __init__(self, n_users: int, n_items: int, user_table: FeatureTable | None,
                 item_table: FeatureTable | None, dim: int, hidden: Sequence[int],
                 history: int) -> None:
        super().__init__()
        self.query = Tower(n_users + 1, user_table, dim, hidden, pool=n_items + 1 if history else 0)
        self.item = Tower(n_items + 1, item_table, dim, hidden)


def padded_history(train: Interactions, length: int, seed: int) -> np.ndarray:
    """(n_users, length) int64: each user's training items as item index + 1, 0-padded; the
    latest `length` items when the data has timestamps, a seeded random `length` otherwise."""
    rows, cols = train.coo
    if train.timestamps is not None and train.timestamps.nnz == len(rows):
        key = -train.timestamps.tocsr().data.astype(np.float64)  # latest first
    else:
        key = np.random.default_rng(seed).random(len(rows))
    order = np.lexsort((key, rows))
    rows, cols = rows[order], cols[order]
    position = np.arange(len(rows)) - train.matrix.indptr[rows]
    keep = position < length
    out = np.zeros((train.n_users, length), np.int64)
    out[rows[keep], position[keep]] = cols[keep] + 1
    return out


@register("two_tower")
@dataclass(eq=False, repr=False, kw_only=True)
class TwoTower(TorchRecommender):
    """Two-tower retrieval (query and item MLP towers over ids and side features) with a
    logQ-corrected batch softmax and optional self-supervised feature masking.

    `dim`: width of each field embedding; `hidden`: MLP sizes (the last is the output width);
    `temperature`: of the main softmax; `logq`: subtract log q_j, q_j = batch size x the item's
    training frequency + `negatives` / n_items (its expected count among the candidates);
    `negatives`: extra uniform negatives shared by the batch; `history`: how many of a user's
    training items are mean-pooled into the query (0: none; the target item is left out
    during training). `ssl`: none, rfm or cfm; `alpha`: weight of the SSL loss;
    `ssl_temperature`; `ssl_batch`: items per SSL batch (0: the batch size), drawn uniformly
    from the whole catalogue (cold-start items included); `ssl_dropout`: probability of
    dropping each value of a multi-valued feature in a view; `cfm_partners`: fields masked with
    the CFM seed (default half the fields); `id_dropout`: share of training rows whose user and
    item ids read the unknown-id row, which new users and cold-start items use;
    `mask_positives`: an in-batch candidate that is one of the row's user's training items is
    not a negative (copies of the row's own item never are): pushing a user's known items away
    fights the items like them (on the simulator's data NDCG@20 0.133 against 0.116 over 5
    seeds; MovieLens-100K unchanged, 0.373 against 0.371). SSL needs item features.
    """

    dim: Positive[int] = 32
    hidden: Annotated[tuple[Positive[int], ...], MinLen(1)] = (128, 64, 32)  # towers' widths differ
    temperature: Positive[float] = 0.1
    logq: bool = True
    negatives: NonNegative[int] = 0
    history: NonNegative[int] = 50
    ssl: Literal["none", "rfm", "cfm"] = "none"
    alpha: NonNegative[float] = 0.2
    ssl_temperature: Positive[float] = 0.1
    ssl_batch: NonNegative[int] = 0
    ssl_dropout: Probability = 0.1
    cfm_partners: NonNegative[int] | None = None
    id_dropout: Probability = 0.1
    mask_positives: bool = True
    lr: Positive[float] = 0.001
    weight_decay: NonNegative[float] = 0.0

    uses: ClassVar[frozenset[str]] = frozenset({"item_features", "user_features"})
    new_user_inputs: ClassVar[tuple[str, ...]] = ("features", "history")
    state_rows: ClassVar[dict[str, str]] = {"user_factors": "users", "item_factors": "items",
                                            "item_trained": "items"}
    test_params: ClassVar[dict] = {"dim": 16, "hidden": (32, 16), "epochs": 10, "lr": 0.01,
                                   "temperature": 0.2}
    search_space: ClassVar[dict] = {  # what `recsys tune` searches (alpha only with SSL)
        "dim": Int(8, 128, log=True), "lr": Float(1e-3, 3e-2, log=True),
        "temperature": Float(0.02, 0.5, log=True),
        "alpha": Float(0.01, 1.0, log=True, when={"ssl": ("rfm", "cfm")}),
    }

    # ---- training -------------------------------------------------------------------------
    def _note_left_out(self, item_table: FeatureTable | None, user_table: FeatureTable | None) -> None:
        """Say which feature columns the towers cannot read (free text, until it is encoded
        into a dense column), once per fit, in the log and `fit_info_`."""
        left_out = [f"{side}.{name}" for side, table in (("item", item_table), ("user", user_table))
                    if table is not None for name in table.columns
                    if name not in encodable_columns(table)]
        if left_out and "columns_left_out" not in self.fit_info_:
            self.fit_info_["columns_left_out"] = left_out
            log.warning("two_tower: feature column(s) %s hold free text, which the towers do not "
                        "read (encode it into a dense column first); left out", ", ".join(left_out))

    def build(self, train: Interactions, device: torch.device) -> nn.Module:
        item_table, user_table = train.item_features, train.user_features
        self.item_columns_ = encodable_columns(item_table)
        self._note_left_out(item_table, user_table)
        if self.ssl != "none" and not self.item_columns_:
            raise RecsysError(f"two_tower: ssl={self.ssl} masks item features, but the "
                              "training data has none (give --item-features)")
        module = TwoTowerModule(train.n_users, train.n_items, user_table, item_table,
                                self.dim, self.hidden, self.history).to(device)
        popularity = train.item_popularity
        self.item_trained_ = torch.as_tensor(popularity > 0)
        self.item_rows_ = self._item_rows(device)
        self.user_rows_ = torch.as_tensor(np.where(train.user_degree > 0,
                                                   np.arange(train.n_users) + 1, 0), device=device)
        self.item_data_ = item_table.to(device) if self.item_columns_ else None
        self.user_data_ = (user_table.to(device) if encodable_columns(user_table) else None)
        self.histories_ = (torch.as_tensor(padded_history(train, self.history, self.seed),
                                           device=device) if self.history else None)
        self.batch_ = self.batch_size or auto_batch_size(train.nnz)
        frequency = torch.as_tensor(popularity / popularity.sum(), dtype=torch.float32, device=device)
        self.expected_ = frequency * self.batch_ + self.negatives / train.n_items
        # the training pairs, and whether a (user, item) pair is one (`mask_positives`)
        self.positives_ = PairSampler(train, self.batch_, device=device, negatives=False)
        self.pairs_ = self.positives_.users, self.positives_.items
        self.generator_ = torch.Generator(device=device).manual_seed(self.seed)
        if self.ssl == "cfm":
            codes = field_codes(item_table, self.item_columns_, train.n_items)
            groups = cfm_groups(mi_matrix(codes, popularity), self.cfm_partners)
            self.cfm_groups_ = torch.as_tensor(groups, device=device)
            self.fit_info_["cfm_groups"] = {
                name: [n for n, g in zip(module.item.field_names, row, strict=True) if g]
                for name, row in zip(module.item.field_names, groups, strict=True)}
        return module

    def batches(self, epoch: int):
        users, items = self.pairs_
        order = torch.randperm(len(users), generator=self.generator_, device=users.device)
        for start in range(0, len(order), self.batch_):
            idx = order[start:start + self.batch_]
            yield users[idx], items[idx]

    def loss(self, users: torch.Tensor, items: torch.Tensor) -> dict[str, torch.Tensor]:
        tower = self.module_
        history = None
        if self.histories_ is not None:  # the target item is not part of its own query
            history = self.histories_[users]
            history = history.masked_fill(history == items[:, None] + 1, 0)
        q = tower.query(self._drop_ids(self.user_rows_[users]), self._user_batch(users), history)
        candidates = items
        if self.negatives:
            extra = torch.randint(len(self.item_rows_), (self.negatives,),
                                  generator=self.generator_, device=items.device)
            candidates = torch.cat([items, extra])
        v = tower.item(self._drop_ids(self.item_rows_[candidates]), self._item_batch(candidates))
        logits = q @ v.T / self.temperature
        if self.logq:
            logits = logits - self.expected_[candidates].log()
        # another row's copy of the same item is not a negative, nor (mask_positives) another
        # of the row's user's training items
        twin = items[:, None] == candidates[None, :]
        if self.mask_positives:
            twin |= self.positives_.is_positive(users[:, None].expand_as(twin),
                                                candidates[None, :].expand_as(twin))
        twin[:, :len(items)].fill_diagonal_(False)
        logits = logits.masked_fill(twin, float("-inf"))
        parts = {"main": F.cross_entropy(logits, torch.arange(len(items), device=items.device))}
        if self.ssl != "none":
            parts["ssl"] = self.alpha * self._ssl_loss(len(items))
        return parts

    def _ssl_loss(self, batch: int) -> torch.Tensor:
        """InfoNCE between two complementary masked views of items drawn uniformly."""
        items, mask = self._ssl_views(self.ssl_batch or batch)
        features = self.item_data_.batch(items)
        multi = [c for c in self.item_columns_ if self.item_data_.table.columns[c].kind == "multi"]
        rows = self.item_rows_[items]
        z1 = self.module_.item(rows, drop_values(features, multi, self.ssl_dropout, self.generator_),
                               mask=mask)
        z2 = self.module_.item(rows, drop_values(features, multi, self.ssl_dropout, self.generator_),
                               mask=~mask)
        return info_nce(z1, z2, self.ssl_temperature, keep=first_occurrence(items))

    def _ssl_views(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """`n` item indices drawn uniformly from the catalogue (not from the training stream,
        which would leave the tail out: the paper's heterogeneous sampling) and the (n, F) mask
        of their first view (the second view masks the complement)."""
        device = self.item_rows_.device
        items = torch.randint(len(self.item_rows_), (n,), generator=self.generator_, device=device)
        if self.ssl == "rfm":
            return items, rfm_masks(n, self.module_.item.n_fields, self.generator_, device)
        return items, cfm_masks(n, self.cfm_groups_, self.generator_)

    def _drop_ids(self, rows: torch.Tensor) -> torch.Tensor:
        """`rows` with a share `id_dropout` replaced by the unknown-id row 0 (so that row is
        trained for the new users and cold-start items that read it)."""
        if self.id_dropout <= 0:
            return rows
        drop = torch.rand(rows.shape, generator=self.generator_, device=rows.device) < self.id_dropout
        return rows.masked_fill(drop, 0)

    def _user_batch(self, users: torch.Tensor):
        return self.user_data_.batch(users) if self.user_data_ is not None else None

    def _item_batch(self, items: torch.Tensor):
        return self.item_data_.batch(items) if self.item_data_ is not None else None

    def _item_rows(self, device: torch.device) -> torch.Tensor:
        n = len(self.item_trained_)
        trained = self.item_trained_.to(device)
        return torch.where(trained, torch.arange(1, n + 1, device=device), 0)

    # ---- export ---------------------------------------------------------------------------
    @torch.no_grad()
    def export(self) -> tuple[torch.Tensor, torch.Tensor]:
        tower = self.module_
        device = self.item_rows_.device
        users = torch.arange(len(self.user_rows_), device=device)
        items = torch.arange(len(self.item_rows_), device=device)
        q = torch.cat([tower.query(self.user_rows_[u], self._user_batch(u),
                                   None if self.histories_ is None else self.histories_[u])
                       for u in users.split(CHUNK)])
        v = torch.cat([tower.item(self.item_rows_[i], self._item_batch(i))
                       for i in items.split(CHUNK)])
        return q, v

    # ---- new users ------------------------------------------------------------------------
    @torch.no_grad()
    def user_vectors(self, features: FeatureTable | None = None,
                     history: Sequence[Sequence[int]] | None = None) -> torch.Tensor:
        """Query vectors (n, d) of users the model never saw, comparable to `item_factors()`.

        features: one row per new user, encoded with the model's vocabularies
            (`model.features_["user_features"].encode(frame, "user_id")`);
        history: per new user, the item indices they interacted with (oldest first; the
            latest `history` count is used), or a CSR matrix (users x items) of them. Either
            may be None (not both); with both, their lengths must agree. Items the model
            never trained on are ignored.
        """
        self._check_fitted()
        if sp.issparse(history):
            history = sp.csr_matrix(history)
            history = np.split(history.indices, history.indptr[1:-1])
        if features is None and history is None:
            raise RecsysError("user_vectors needs user features, a history, or both")
        n = len(features) if features is not None else len(history)
        if history is not None and len(history) != n:
            raise RecsysError(f"user_vectors: {len(history)} histories for {n} feature rows")
        module = self._module()
        device = self.item_factors_.device
        batch = None
        if module.query.features is not None:
            table = features if features is not None else self.features_["user_features"].subset(
                np.zeros(0, np.int64)).reindex(IdMap(np.arange(n)))  # all missing
            batch = table.to(device).batch(torch.arange(n, device=device))
        items = None
        if module.query.pool is not None:
            items = torch.as_tensor(self._padded(history or [[]] * n), device=device)
        return module.query(torch.zeros(n, dtype=torch.long, device=device), batch, items)

    def _padded(self, history: Sequence[Sequence[int]]) -> np.ndarray:
        trained = self.item_trained_.cpu().numpy()
        out = np.zeros((len(history), self.history), np.int64)
        for r, items in enumerate(history):  # one short list per request row
            items = np.asarray(items, np.int64)
            bad = (items < 0) | (items >= len(trained))
            if bad.any():
                raise RecsysError(f"history row {r}: item index {items[bad][0]} outside the "
                                  f"catalogue of {len(trained)} items")
            items = items[trained[items]][-self.history:]
            out[r, :len(items)] = items + 1
        return out

    def _module(self) -> TwoTowerModule:
        """The trained towers (rebuilt from the saved weights after `load`)."""
        if getattr(self, "module_", None) is None:
            module = TwoTowerModule(len(self.user_map_), len(self.item_map_),
                                    self.features_.get("user_features"),
                                    self.features_.get("item_features"), self.dim, self.hidden,
                                    self.history)
            module.load_state_dict(self.module_state_)
            self.module_ = module.to(self.item_factors_.device)
        return self.module_

    # ---- persistence ----------------------------------------------------------------------
    def _state(self) -> dict[str, torch.Tensor]:
        weights = {f"module.{k}": v for k, v in self._module().state_dict().items()}
        return {**super()._state(), "item_trained": self.item_trained_, **weights}

    def _load_state(self, state: dict[str, torch.Tensor]) -> None:
        super()._load_state(state)
        self.item_trained_ = state["item_trained"].bool()
        self.module_state_ = {k.removeprefix("module."): v for k, v in state.items()
                              if k.startswith("module.")}
        self.module_ = None
