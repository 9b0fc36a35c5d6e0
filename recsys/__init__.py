"""recsys: recommendation from implicit, sparse feedback.

Sub-packages: `recsys.data` (Interactions, readers, splits), `recsys.models` (registry and
models), `recsys.evaluate` (metrics and the full-ranking evaluator), `recsys.train`.
"""

from recsys.data import IdMap, Interactions
from recsys.errors import DataError, RecsysError
from recsys.models import create_model, load_model, model_names

__version__ = "0.1.0"
__all__ = ["DataError", "IdMap", "Interactions", "RecsysError", "create_model", "load_model",
           "model_names"]
