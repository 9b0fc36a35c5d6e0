"""The on-device selection score agrees with the full evaluators it stands in for."""

import numpy as np
import pytest
import torch

from recsys.data.propensity import item_propensity
from recsys.data.split import holdout
from recsys.errors import RecsysError
from recsys.evaluate import evaluate
from recsys.evaluate.unbiased import ips_metrics
from recsys.evaluate.validation import Validator
from recsys.models.factor import FactorModel


@pytest.fixture(scope="module")
def parts(small_data):
    fit, valid = holdout(small_data, 0.2, seed=1)
    gen = torch.Generator().manual_seed(0)
    model = FactorModel()
    model.user_map_, model.item_map_ = fit.user_map, fit.item_map
    model._set_factors(torch.randn(fit.n_users, 8, generator=gen), torch.randn(fit.n_items, 8, generator=gen))
    users = np.flatnonzero(valid.user_degree > 0)[::3]
    return fit, valid, model, users


@pytest.mark.parametrize("metric", ["ndcg@20", "recall@5", "map@10", "mrr@3", "hit_rate@1",
                                    "precision@200"])
def test_ranking_metric_matches_evaluate(parts, metric):
    fit, valid, model, users = parts
    expected = evaluate(model, valid, train=fit, k=int(metric.split("@")[1]), users=users)[metric]
    got = Validator(fit, valid, users, metric, torch.device("cpu"))(model.user_factors(),
                                                                     model.item_factors())
    assert got == pytest.approx(expected, rel=1e-12)


def test_snips_recall_matches_ips_metrics(parts):
    fit, valid, model, users = parts
    propensity = item_propensity(fit.item_popularity, 0.5).with_clip(0.05)
    expected = ips_metrics(model, valid, train=fit, propensity=propensity, k=20, users=users)
    got = Validator(fit, valid, users, "recall@20", torch.device("cpu"), propensity)(
        model.user_factors(), model.item_factors())
    assert got == pytest.approx(expected["snips_recall@20"], rel=1e-12)


def test_users_without_validation_pairs_are_refused(parts):
    fit, valid, _, _ = parts
    empty = np.flatnonzero(valid.user_degree == 0)[:1]
    with pytest.raises(RecsysError, match="each have a validation pair"):
        Validator(fit, valid, empty, "ndcg@20", torch.device("cpu"))


def test_small_cpu_blocks_and_a_reused_buffer_give_the_same_score(parts, monkeypatch):
    import recsys.evaluate.validation as validation

    fit, valid, model, users = parts
    expected = evaluate(model, valid, train=fit, k=20, users=users)["ndcg@20"]
    monkeypatch.setattr(validation, "CPU_BLOCK_SCORES", 7 * fit.n_items)  # 7 users a block
    validator = Validator(fit, valid, users, "ndcg@20", torch.device("cpu"))
    assert len(validator.blocks) == -(-len(users) // 7) and validator.buffer.shape[0] == 7
    first = validator(model.user_factors(), model.item_factors())
    other = validator(-model.user_factors(), model.item_factors())  # the buffer is overwritten
    assert first == pytest.approx(expected, rel=1e-12)
    assert validator(model.user_factors(), model.item_factors()) == first != other


def test_validation_pairs_that_are_training_pairs_are_dropped_and_counted(parts, small_data):
    from recsys import create_model

    fit, valid, _, _ = parts
    rows, cols = small_data.coo
    in_fit = np.asarray(fit.matrix[rows, cols]).ravel() != 0
    extra = in_fit & (np.arange(len(rows)) % 5 == 0)  # some training pairs join the validation set
    mixed = small_data.with_pairs(rows, cols, ~in_fit | extra)
    params = {"factors": 8, "epochs": 2, "device": "cpu", "progress": False, "refit": False}
    clean = create_model("mf", **params).fit(fit, valid=valid)
    model = create_model("mf", **params).fit(fit, valid=mixed)
    assert model.fit_info_["valid_pairs_in_train"] == int(extra.sum()) > 0
    assert [h["valid"] for h in model.history_] == [h["valid"] for h in clean.history_]
    only_train = create_model("mf", **params).fit(fit, valid=fit)
    assert only_train.fit_info_["early_stopping"] == (
        "off: the validation data has no pairs outside the training data")
