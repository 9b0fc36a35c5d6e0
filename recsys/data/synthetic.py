"""Synthetic implicit-feedback logs with latent structure and power-law item popularity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch


def synthetic_log(n_users: int = 1000, n_items: int = 500, n_interactions: int = 20000, *,
                  factors: int = 16, popularity_exponent: float = 1.0, affinity: float = 2.0,
                  string_ids: bool = False, seed: int = 0, chunk_users: int = 2048,
                  device: str | torch.device = "cpu") -> pd.DataFrame:
    """Event log user_id, item_id, timestamp with one row per distinct (user, item) pair.

    Item base popularity follows a Zipf law rank^-popularity_exponent; user activity is
    log-normal; each user draws items without replacement from
    softmax(affinity * <u, v> + log popularity), so both taste and popularity matter.
    The draws cost O(users x items): `device` (e.g. "cuda") makes them on an accelerator, for
    logs of 10^7 pairs and more (the same seed draws another log there than on the CPU).
    """
    device = torch.device(device)
    gen = torch.Generator().manual_seed(seed)
    draw = gen if device.type == "cpu" else torch.Generator(device).manual_seed(seed)
    rng = np.random.default_rng(seed)
    user_f = torch.randn(n_users, factors, generator=gen) / factors**0.25
    item_f = torch.randn(n_items, factors, generator=gen) / factors**0.25
    log_pop = -popularity_exponent * torch.log(torch.arange(1, n_items + 1, dtype=torch.float32))
    log_pop = log_pop[torch.randperm(n_items, generator=gen)]
    activity = rng.lognormal(0.0, 1.0, n_users)
    counts = np.maximum(1, np.round(activity / activity.sum() * n_interactions)).astype(np.int64)
    counts = np.minimum(counts, n_items)
    user_f, item_f, log_pop = user_f.to(device), item_f.to(device), log_pop.to(device)
    users, items = [], []
    for start in range(0, n_users, chunk_users):
        stop = min(start + chunk_users, n_users)
        logits = affinity * user_f[start:stop] @ item_f.T + log_pop
        uniform = torch.rand(logits.shape, generator=draw, device=device).clamp_min(1e-12)
        n = torch.from_numpy(counts[start:stop])
        top = torch.topk(logits - torch.log(-torch.log(uniform)), int(n.max()), dim=1).indices.cpu()
        keep = torch.arange(top.shape[1]) < n[:, None]
        users.append(torch.arange(start, stop).repeat_interleave(n).numpy())
        items.append(top[keep].numpy())
    u, i = np.concatenate(users), np.concatenate(items)
    frame = pd.DataFrame({
        "user_id": np.char.add("u", u.astype(str)) if string_ids else u,
        "item_id": np.char.add("i", i.astype(str)) if string_ids else i,
        "timestamp": rng.integers(1_600_000_000, 1_700_000_000, len(u)),
    })
    return frame
