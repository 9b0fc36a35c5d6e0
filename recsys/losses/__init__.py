"""Loss functions as pure functions of scores (and weights), shared by every model."""

from recsys.losses.pairwise import bpr_loss

__all__ = ["bpr_loss"]
