"""Loss functions as pure functions of scores (and weights), shared by every model."""

from recsys.losses.pairwise import bpr_loss, ubpr_loss
from recsys.losses.pointwise import bce_loss, deltas, ideal_loss, relmf_loss, wmf_loss

__all__ = ["bce_loss", "bpr_loss", "deltas", "ideal_loss", "relmf_loss", "ubpr_loss", "wmf_loss"]
