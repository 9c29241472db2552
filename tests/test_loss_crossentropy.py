"""R2 `crossentropy_loss`: BCE on logits against 1 - IE."""
import math

import pytest
import torch

from loss_helpers import LN3, PAD, loss_and_grad as _loss_and_grad
from rerank.losses import crossentropy_loss, get_loss


def test_registry():
    assert get_loss("crossentropy") is crossentropy_loss


def test_hand_computed_value_and_gradient():
    # logits [0, ln 3], targets [1, 0]: sigmoid = [1/2, 3/4]
    # BCE = [-ln(1/2), -ln(1 - 3/4)] = [ln 2, ln 4] -> mean = 3 ln 2 / 2 ~ 1.0397
    # dL/ds = (sigmoid(s) - y) / n = [(1/2 - 1)/2, (3/4 - 0)/2] = [-1/4, 3/8]
    loss, grad = _loss_and_grad(crossentropy_loss, torch.tensor([[0.0, LN3]]), torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(loss, torch.tensor(1.5 * math.log(2)))
    torch.testing.assert_close(grad, torch.tensor([[-0.25, 0.375]]))


def test_mean_over_hypotheses_not_rows():
    # row 1: one hypothesis, logit 0, y 1 -> ln 2; row 2: three, logit 0 -> 3 ln 2
    # mean over 4 hypotheses -> ln 2 (a mean over rows would give ln 2 too, so use logit ln 3 in row 1:
    # -ln(3/4) = ln(4/3)) -> (ln(4/3) + 3 ln 2) / 4
    y_pred = torch.tensor([[LN3, 9.0, 9.0], [0.0, 0.0, 0.0]])
    y_true = torch.tensor([[1.0, PAD, PAD], [1.0, 0.0, 1.0]])
    expected = (math.log(4 / 3) + 3 * math.log(2)) / 4
    torch.testing.assert_close(crossentropy_loss(y_pred, y_true), torch.tensor(expected))


def test_equals_torch_bce_with_logits_on_unpadded_entries():
    torch.manual_seed(0)
    s = torch.randn(6, 5, dtype=torch.float64) * 3
    y = (torch.rand(6, 5) < 0.4).to(torch.float64)
    pad = torch.rand(6, 5) < 0.3
    pad[2] = True
    y[pad] = PAD
    s_a = s.clone().requires_grad_(True)
    s_b = s.clone().requires_grad_(True)
    loss = crossentropy_loss(s_a, y)
    ref = torch.nn.BCEWithLogitsLoss()(s_b[~pad], y[~pad])
    torch.testing.assert_close(loss, ref)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(s_a.grad, s_b.grad)


def test_padding_invariance():
    torch.manual_seed(1)
    s = torch.randn(3, 4)
    y = (torch.rand(3, 4) < 0.5).float()
    y[0, 0] = PAD
    base_loss, base_grad = _loss_and_grad(crossentropy_loss, s, y)
    extreme = torch.tensor([1e30, -1e30, 1e4, float("inf"), -float("inf")])
    s_pad = torch.cat([s[:, :1], extreme.expand(3, 5), s[:, 1:], torch.full((3, 2), -1e38)], dim=1)
    y_pad = torch.cat([y[:, :1], torch.full((3, 5), PAD), y[:, 1:], torch.full((3, 2), PAD)], dim=1)
    loss, grad = _loss_and_grad(crossentropy_loss, s_pad, y_pad)
    real = torch.tensor([0, 6, 7, 8])
    torch.testing.assert_close(loss, base_loss)
    torch.testing.assert_close(grad[:, real], base_grad)
    padded = torch.ones(s_pad.shape[1], dtype=torch.bool)
    padded[real] = False
    assert torch.equal(grad[:, padded], torch.zeros(3, int(padded.sum())))


def test_all_padding_row_and_batch_give_no_nan():
    # one real hypothesis (logit 0, y 1 -> ln 2) plus an all-padding row
    s = torch.tensor([[0.0, 1e4], [1e4, -1e4]])
    y = torch.tensor([[1.0, PAD], [PAD, PAD]])
    loss, grad = _loss_and_grad(crossentropy_loss, s, y)
    torch.testing.assert_close(loss, torch.tensor(math.log(2)))
    assert torch.isfinite(grad).all() and torch.equal(grad[1], torch.zeros(2))

    s = torch.tensor([[1e4, -1e4], [0.0, 3.0]], requires_grad=True)
    loss = crossentropy_loss(s, torch.full((2, 2), PAD))
    assert loss.grad_fn is not None and loss.item() == 0.0
    loss.backward()
    assert torch.equal(s.grad, torch.zeros(2, 2))


def test_numerical_stability_extreme_logits():
    # confident right -> ~0 loss, confident wrong -> ~|s| loss; never inf / NaN
    s = torch.tensor([[1e4, -1e4, 1e4, -1e4]])
    y = torch.tensor([[1.0, 0.0, 0.0, 1.0]])
    loss, grad = _loss_and_grad(crossentropy_loss, s, y)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, torch.tensor(2e4 / 4))  # (0 + 0 + 1e4 + 1e4) / 4
    torch.testing.assert_close(grad, torch.tensor([[0.0, 0.0, 0.25, -0.25]]))


def test_logit_scale_effect():
    # R2 has no temperature; scaling the logits (as a 1/T would) sharpens p = sigmoid(s):
    # the loss of a right hypothesis falls and that of a wrong one grows
    right = (torch.tensor([[2.0]]), torch.tensor([[1.0]]))
    wrong = (torch.tensor([[2.0]]), torch.tensor([[0.0]]))
    r = [crossentropy_loss(right[0] * k, right[1]).item() for k in (0.5, 1.0, 2.0)]
    w = [crossentropy_loss(wrong[0] * k, wrong[1]).item() for k in (0.5, 1.0, 2.0)]
    assert r == sorted(r, reverse=True) and w == sorted(w)
    # -ln sigmoid(2) = ln(1 + e^-2)
    torch.testing.assert_close(torch.tensor(r[1]), torch.tensor(math.log1p(math.exp(-2))))


def test_gradcheck():
    torch.manual_seed(2)
    s = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(3, 4) < 0.5).to(torch.float64)
    y[1, 2:] = PAD
    assert torch.autograd.gradcheck(lambda x: crossentropy_loss(x, y), (s,))


def test_minimising_recovers_the_positive_rate():
    # four groups (rows) of samples with positive rate 0.3 each, padded to 20;
    # a single free logit per group is broadcast over its samples.
    # dL/ds_g ∝ sum_i (sigmoid(s_g) - y_i) = 0  <=>  sigmoid(s_g) = 0.3
    sizes = [10, 20, 10, 20]
    y = torch.full((4, 20), PAD)
    for g, n in enumerate(sizes):
        pos = int(round(0.3 * n))
        y[g, :n] = torch.tensor([1.0] * pos + [0.0] * (n - pos))
    logits = torch.tensor([3.0, -2.0, 0.0, 5.0], requires_grad=True)
    opt = torch.optim.LBFGS([logits], lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = crossentropy_loss(logits[:, None].expand(4, 20), y)
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(torch.sigmoid(logits.detach()), torch.full((4,), 0.3), atol=1e-4, rtol=0)


def test_validation_errors():
    with pytest.raises(ValueError, match="same shape"):
        crossentropy_loss(torch.zeros(2, 3), torch.zeros(3, 2))
    with pytest.raises(ValueError, match="2-D"):
        crossentropy_loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(TypeError):
        crossentropy_loss([[0.0]], torch.zeros(1, 1))
