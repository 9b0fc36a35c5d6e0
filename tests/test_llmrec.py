import torch

from recsys.models.llmrec_parts import SideInfo, keep_smallest, sce_loss


def test_keep_smallest_drops_the_largest_loss_fraction():
    losses = torch.tensor([5.0, 1.0, 4.0, 2.0, 3.0])
    assert sorted(keep_smallest(losses, 0.4).tolist()) == [1.0, 2.0, 3.0]  # ceil(0.6 * 5) = 3
    assert sorted(keep_smallest(losses, 0.0).tolist()) == sorted(losses.tolist())
    assert keep_smallest(losses, 0.99).tolist() == [1.0]
    assert len(keep_smallest(torch.zeros(0), 0.5)) == 0


def test_sce_loss_closed_forms():
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert sce_loss(x, x).item() == 0.0
    assert sce_loss(-x, x).item() == 4.0                       # (1 - (-1))^2
    assert sce_loss(x.flip(1), x, alpha=3.0).item() == 1.0     # orthogonal rows: (1 - 0)^3


def side(seed=0):
    g = torch.Generator().manual_seed(seed)
    return SideInfo(torch.randn(5, 8, generator=g), torch.randn(7, 8, generator=g), dim=4)


def test_fuse_adds_unit_side_vectors_scaled_by_their_weight():
    s, users, items = side(), torch.zeros(5, 4), torch.ones(7, 4)
    u, i = s.fuse(users, items, 0.5, 0.0)
    torch.testing.assert_close(u.norm(dim=1), torch.full((5,), 0.5))
    assert torch.equal(i, items)


def test_mae_masks_a_copy_and_trains_projection_and_decoder():
    s = side()
    stored = s.user_x.clone(), s.item_x.clone()
    loss = s.mae_loss(lambda nodes: nodes, rate=0.4, generator=torch.Generator().manual_seed(1))
    loss.backward()
    assert torch.isfinite(loss) and 0 < loss.item() <= 8  # two SCE terms, each at most 2^2
    assert torch.equal(s.user_x, stored[0]) and torch.equal(s.item_x, stored[1])
    for layer in (s.user_proj, s.item_proj, s.user_dec, s.item_dec):
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
