"""Models behind one Recommender protocol, looked up by name in a registry."""

from recsys.models.base import (
    BaseRecommender,
    Recommender,
    create_model,
    get_model_class,
    load_model,
    model_names,
    register,
)
from recsys.models.ease import EASE
from recsys.models.factor import FactorModel
from recsys.models.gnolr import GNOLR
from recsys.models.graph import LightGCNRecommender
from recsys.models.implicit_models import ALS, BPR
from recsys.models.llmrec import LLMRecRecommender
from recsys.models.mf import MF
from recsys.models.pop import Popularity
from recsys.models.two_tower import TwoTower

__all__ = [
    "ALS", "BPR", "EASE", "GNOLR", "LLMRecRecommender", "LightGCNRecommender", "MF",
    "BaseRecommender", "FactorModel", "Popularity", "Recommender", "TwoTower",
    "create_model", "get_model_class", "load_model", "model_names", "register",
]
