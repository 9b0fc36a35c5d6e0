"""Loss functions as pure functions of scores (and weights), shared by every model."""

from recsys.losses.contrastive import distinct, first_occurrence, info_nce
from recsys.losses.ordinal import cumulative_link_loss, nested_ordinal_loss, ordinal_nll
from recsys.losses.pairwise import bpr_loss, ubpr_loss
from recsys.losses.pointwise import bce_loss, deltas, ideal_loss, relmf_loss, wmf_loss

__all__ = ["bce_loss", "bpr_loss", "cumulative_link_loss", "deltas", "distinct", "first_occurrence",
           "ideal_loss", "info_nce", "nested_ordinal_loss", "ordinal_nll", "relmf_loss",
           "ubpr_loss", "wmf_loss"]
