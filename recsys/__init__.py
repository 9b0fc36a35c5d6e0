"""recsys: recommendation from implicit, sparse feedback."""

from recsys.data import IdMap, Interactions, split
from recsys.errors import DataError, RecsysError
from recsys.evaluate import evaluate
from recsys.models import create_model, load_model, model_names

__version__ = "0.1.0"
__all__ = [
    "DataError", "IdMap", "Interactions", "RecsysError", "create_model", "evaluate",
    "load_model", "model_names", "split",
]
