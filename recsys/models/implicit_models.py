"""ALS and BPR baselines from the `implicit` library, behind the Recommender protocol."""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from threadpoolctl import threadpool_limits

from recsys.data.interactions import Interactions
from recsys.errors import RecsysError
from recsys.models.base import register
from recsys.models.factor import FactorModel
from recsys.models.params import Device, NonNegative, Positive
from recsys.models.space import Float, Int


def _use_gpu(device: str) -> bool:
    import implicit.gpu

    if device == "cuda" and not implicit.gpu.HAS_CUDA:
        raise RecsysError("device='cuda' but this implicit build has no CUDA support")
    return device in ("auto", "cuda") and implicit.gpu.HAS_CUDA


def _fit_implicit(build, wrapper: FactorModel, matrix: sp.csr_matrix, progress: bool,
                  culprit: str) -> None:
    """Fit an implicit model into `wrapper`'s factors. Diverged training (NaN or infinite
    factors, implicit's ModelFitError) is one error naming `culprit`, the parameter to lower."""
    from implicit.recommender_base import ModelFitError

    # implicit parallelises itself; a multi-threaded BLAS underneath it oversubscribes the cores
    with threadpool_limits(1, "blas"):
        model = build()
        try:
            model.fit(matrix, show_progress=progress)
        except ModelFitError:
            model = None
    if model is not None and hasattr(model, "to_cpu"):  # GPU models keep factors on the device
        model = model.to_cpu()
    if model is None or not (np.isfinite(model.user_factors).all()
                             and np.isfinite(model.item_factors).all()):
        raise RecsysError(f"{wrapper.name}: training diverged (factors became NaN or infinite); "
                          f"lower {culprit} (now {getattr(wrapper, culprit)})")
    wrapper._set_factors(model.user_factors, model.item_factors)


@register("als")
class ALS(FactorModel):
    """Implicit ALS (Hu, Koren & Volinsky 2008): confidence 1 + alpha * weight, conjugate gradient.

    Uses implicit's GPU solver when the device is 'auto' or 'cuda' and CUDA is available. New
    users are folded in by implicit's exact recalculation (`recalculate_user`: one Cholesky
    solve of the ALS user step against the fixed item factors).
    """

    # regularization and alpha trade off along a ridge (the loss scales with the confidence
    # 1 + alpha * weight): outside these ranges most of the space ranks by popularity
    search_space = {"factors": Int(16, 256, log=True), "regularization": Float(1.0, 300.0, log=True),
                    "alpha": Float(0.5, 20.0, log=True), "iterations": Int(10, 30)}

    test_params: ClassVar[dict] = {"factors": 16, "iterations": 5}

    def __init__(self, factors: Positive[int] = 64, regularization: NonNegative[float] = 0.05,
                 alpha: Positive[float] = 2.0, iterations: Positive[int] = 15,
                 seed: NonNegative[int] = 0, device: Device = "auto", progress: bool = True) -> None:
        self.factors = factors
        self.regularization = regularization
        self.alpha = alpha
        self.iterations = iterations
        self.seed = seed
        self.device = device
        self.progress = progress

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            callbacks: Iterable = ()) -> ALS:
        import implicit.als

        self._start_fit(train)
        _fit_implicit(lambda: implicit.als.AlternatingLeastSquares(
            factors=self.factors, regularization=self.regularization, alpha=self.alpha,
            iterations=self.iterations, random_state=self.seed, use_gpu=_use_gpu(self.device)),
            self, train.matrix.astype(np.float32), self.progress, culprit="alpha")
        return self

    def _fold_in(self, history: sp.csr_matrix) -> torch.Tensor:
        from implicit.cpu.als import AlternatingLeastSquares

        items = self.item_factors_.detach().cpu().numpy()
        solver = AlternatingLeastSquares(factors=items.shape[1], regularization=self.regularization,
                                         alpha=self.alpha)
        solver.item_factors = np.ascontiguousarray(items, dtype=np.float32)
        with threadpool_limits(1, "blas"):
            users = solver.recalculate_user(np.arange(history.shape[0]), history)
        return torch.from_numpy(users).to(self.item_factors_.device)


@register("bpr")
class BPR(FactorModel):
    """Implicit's BPR-MF (Rendle et al. 2009), trained by Hogwild SGD; factors include an item bias
    (the last item-factor column, matched by a user column fixed to 1)."""

    fixed_user_columns = 1

    search_space = {"factors": Int(8, 256, log=True), "learning_rate": Float(1e-3, 0.3, log=True),
                    "regularization": Float(1e-5, 0.1, log=True), "iterations": Int(20, 400, log=True)}

    test_params: ClassVar[dict] = {"factors": 16}
    deterministic = False  # Hogwild: threads update shared factors in no fixed order

    def __init__(self, factors: Positive[int] = 64, learning_rate: Positive[float] = 0.01,
                 regularization: NonNegative[float] = 0.01, iterations: Positive[int] = 100,
                 seed: NonNegative[int] = 0, device: Device = "auto", progress: bool = True) -> None:
        self.factors = factors
        self.learning_rate = learning_rate
        self.regularization = regularization
        self.iterations = iterations
        self.seed = seed
        self.device = device
        self.progress = progress

    def fit(self, train: Interactions, *, valid: Interactions | None = None,
            callbacks: Iterable = ()) -> BPR:
        import implicit.bpr

        self._start_fit(train)
        _fit_implicit(lambda: implicit.bpr.BayesianPersonalizedRanking(
            factors=self.factors, learning_rate=self.learning_rate,
            regularization=self.regularization, iterations=self.iterations,
            random_state=self.seed, use_gpu=_use_gpu(self.device)),
            self, train.matrix.astype(np.float32), self.progress, culprit="learning_rate")
        return self
