"""R1 `semer_loss`: expected SemER under softmax(s / T)."""
import math

import pytest
import torch

from loss_helpers import LN3, PAD, loss_and_grad as _loss_and_grad
from rerank.losses import get_loss, semer_loss


def _explicit_utterance_loss(s_own, semer_own, s_other, semer_other, temperature=1.0):
    """Expected SemER over concat(own, detached other) computed directly."""
    own_valid = semer_own != PAD
    oth_valid = semer_other != PAD
    logits = torch.cat([s_own, s_other.detach()], dim=1) / temperature
    valid = torch.cat([own_valid, oth_valid], dim=1)
    semer = torch.cat([semer_own, semer_other], dim=1).clamp(min=0)
    rows = own_valid.any(dim=1)
    logits, valid, semer = logits[rows], valid[rows], semer[rows]
    q = torch.softmax(logits.masked_fill(~valid, float("-inf")), dim=1)
    return (q * semer).sum(dim=1).mean()


def _other_summaries(s_other, semer_other, temperature=1.0):
    valid = semer_other != PAD
    z = (s_other / temperature).masked_fill(~valid, float("-inf"))
    lse = torch.logsumexp(z, dim=1)  # -inf for rows without others
    has = valid.any(dim=1)
    q = torch.softmax(torch.where(has[:, None], z, torch.zeros_like(z)), dim=1)
    es = torch.where(has, (q * semer_other.clamp(min=0) * valid).sum(dim=1), torch.zeros_like(lse))
    return lse, es


def test_registry():
    assert get_loss("semer") is semer_loss


def test_hand_computed_value_and_gradient():
    # logits [0, ln 3], SemER [1, 0] -> q = [1/4, 3/4] -> loss = 1/4*1 + 3/4*0 = 0.25
    # dL/ds_h = q_h (SemER_h - L) / T -> [1/4 * 3/4, 3/4 * (-1/4)] = [3/16, -3/16]
    loss, grad = _loss_and_grad(semer_loss, torch.tensor([[0.0, LN3]]), torch.tensor([[1.0, 0.0]]))
    torch.testing.assert_close(loss, torch.tensor(0.25))
    torch.testing.assert_close(grad, torch.tensor([[3 / 16, -3 / 16]]))


def test_hand_computed_mean_over_rows():
    # row 1 as above: 0.25; row 2 logits [0, 0, pad], SemER [0.5, 1.5] -> q = [1/2, 1/2] -> 1.0
    # mean over the 2 rows -> (0.25 + 1.0) / 2 = 0.625
    y_pred = torch.tensor([[0.0, LN3, 0.0], [0.0, 0.0, 7.0]])
    y_true = torch.tensor([[1.0, 0.0, PAD], [0.5, 1.5, PAD]])
    torch.testing.assert_close(semer_loss(y_pred, y_true), torch.tensor(0.625))


def test_semer_above_one_is_not_clipped():
    # one hypothesis, SemER 3/2 -> q = [1] -> loss 1.5
    torch.testing.assert_close(semer_loss(torch.tensor([[2.0]]), torch.tensor([[1.5]])), torch.tensor(1.5))


def test_hand_computed_utterance_mode():
    # own logit [0], SemER [1]; others logits [0, ln 2], SemER [0, 3]
    # other_logsumexp = ln(1 + 2) = ln 3; other_expected_semer = (1*0 + 2*3)/3 = 2
    # Z = ln(1 + 3) = ln 4 -> loss = (1/4)*1 + (3/4)*2 = 1.75
    # explicit: logits [0, 0, ln 2] -> q = [1/4, 1/4, 1/2] -> 1/4 + 0 + 3/2 = 1.75
    loss = semer_loss(
        torch.tensor([[0.0]]),
        torch.tensor([[1.0]]),
        other_logsumexp=torch.tensor([LN3]),
        other_expected_semer=torch.tensor([2.0]),
    )
    torch.testing.assert_close(loss, torch.tensor(1.75))


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_padding_invariance(temperature):
    torch.manual_seed(0)
    s = torch.randn(3, 4)
    y = torch.rand(3, 4) * 1.5
    y[1, 3] = PAD
    base_loss, base_grad = _loss_and_grad(semer_loss, s, y, temperature=temperature)

    # interleave padded columns holding extreme values
    extreme = torch.tensor([1e30, -1e30, 1e4, float("inf"), -float("inf")])
    s_pad = torch.cat([s[:, :2], extreme.expand(3, 5), s[:, 2:], torch.full((3, 2), 1e38)], dim=1)
    y_pad = torch.cat([y[:, :2], torch.full((3, 5), PAD), y[:, 2:], torch.full((3, 2), PAD)], dim=1)
    loss, grad = _loss_and_grad(semer_loss, s_pad, y_pad, temperature=temperature)
    real = torch.tensor([0, 1, 7, 8])
    torch.testing.assert_close(loss, base_loss)
    torch.testing.assert_close(grad[:, real], base_grad)
    padded = torch.ones(s_pad.shape[1], dtype=torch.bool)
    padded[real] = False
    assert torch.equal(grad[:, padded], torch.zeros(3, int(padded.sum())))


def test_padding_invariance_utterance_mode():
    torch.manual_seed(1)
    s, y = torch.randn(2, 3), torch.rand(2, 3)
    lse, es = torch.tensor([0.3, -float("inf")]), torch.tensor([0.7, 0.0])
    base_loss, base_grad = _loss_and_grad(semer_loss, s, y, other_logsumexp=lse, other_expected_semer=es)
    s_pad = torch.cat([s, torch.full((2, 2), 1e30)], dim=1)
    y_pad = torch.cat([y, torch.full((2, 2), PAD)], dim=1)
    loss, grad = _loss_and_grad(semer_loss, s_pad, y_pad, other_logsumexp=lse, other_expected_semer=es)
    torch.testing.assert_close(loss, base_loss)
    torch.testing.assert_close(grad[:, :3], base_grad)
    assert torch.equal(grad[:, 3:], torch.zeros(2, 2))


def test_all_padding_row_contributes_nothing():
    s = torch.tensor([[0.0, LN3], [5.0, -5.0], [1.0, 2.0]])
    y = torch.tensor([[1.0, 0.0], [PAD, PAD], [PAD, PAD]])
    # row 3 has no own entries but has others: it still contributes nothing
    lse = torch.tensor([-float("inf"), -float("inf"), 2.0])
    es = torch.tensor([0.0, 0.0, 0.9])
    loss, grad = _loss_and_grad(semer_loss, s, y, other_logsumexp=lse, other_expected_semer=es)
    torch.testing.assert_close(loss, torch.tensor(0.25))  # only row 1 counts
    assert torch.isfinite(grad).all()
    assert torch.equal(grad[1:], torch.zeros(2, 2))


@pytest.mark.parametrize("with_others", [False, True])
def test_all_padding_batch_is_zero_without_nan(with_others):
    s = torch.tensor([[1e4, -1e4, 0.0], [3.0, 2.0, 1.0]], requires_grad=True)
    y = torch.full((2, 3), PAD)
    kw = {}
    if with_others:
        kw = dict(other_logsumexp=torch.tensor([1.0, -float("inf")]), other_expected_semer=torch.tensor([0.5, 0.0]))
    loss = semer_loss(s, y, **kw)
    assert loss.grad_fn is not None
    assert loss.item() == 0.0
    loss.backward()
    assert torch.equal(s.grad, torch.zeros(2, 3))


@pytest.mark.parametrize("shape", [(0, 4), (3, 0)])
def test_empty_batch_or_slate(shape):
    s = torch.zeros(shape, requires_grad=True)
    lse, es = torch.zeros(shape[0]), torch.zeros(shape[0])
    for kw in ({}, dict(other_logsumexp=lse, other_expected_semer=es)):
        loss = semer_loss(s, torch.zeros(shape), **kw)
        loss.backward()
        assert loss.item() == 0.0 and s.grad.shape == shape


@pytest.mark.parametrize("temperature", [1.0, 0.1, 10.0])
def test_numerical_stability_extreme_logits(temperature):
    s = torch.tensor([[1e4, -1e4, 0.0], [-1e4, -1e4, PAD], [1e4, 1e4 - 1.0, -1e4]])
    y = torch.tensor([[0.2, 1.0, 0.5], [1.0, 0.0, PAD], [0.0, 2.0, 1.0]])
    loss, grad = _loss_and_grad(semer_loss, s, y, temperature=temperature)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    if temperature == 0.1:
        # z = s / 0.1: row 1 all mass on 1e5 -> 0.2; row 2 exact tie -> (1 + 0) / 2 = 0.5;
        # row 3 z = [1e5, 1e5 - 10, -1e5] -> q ~ [1, e^-10, 0] / (1 + e^-10) -> 2 e^-10 / (1 + e^-10)
        row3 = 2 * math.exp(-10) / (1 + math.exp(-10))
        torch.testing.assert_close(loss, torch.tensor((0.2 + 0.5 + row3) / 3))
    # utterance mode with extreme others
    lse = torch.tensor([1e4, -1e4, -float("inf")])
    es = torch.tensor([0.1, 0.3, 0.0])
    loss, grad = _loss_and_grad(semer_loss, s, y, temperature=temperature, other_logsumexp=lse, other_expected_semer=es)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_temperature_effect():
    s = torch.tensor([[0.0, LN3]])
    y = torch.tensor([[1.0, 0.0]])
    # T = 2: z = [0, ln3 / 2] -> q = [1, sqrt 3] / (1 + sqrt 3) -> loss = 1 / (1 + sqrt 3) ~ 0.366
    torch.testing.assert_close(semer_loss(s, y, temperature=2.0), torch.tensor(1 / (1 + math.sqrt(3))))
    # the loss only depends on s / T
    torch.testing.assert_close(semer_loss(s, y, temperature=2.0), semer_loss(s / 2, y))
    # T -> inf: uniform q -> mean SemER 0.5; T -> 0: argmax -> SemER 0
    torch.testing.assert_close(semer_loss(s, y, temperature=1e6), torch.tensor(0.5), atol=1e-5, rtol=0)
    torch.testing.assert_close(semer_loss(s, y, temperature=1e-3), torch.tensor(0.0), atol=1e-6, rtol=0)
    values = [semer_loss(s, y, temperature=t).item() for t in (0.25, 0.5, 1.0, 2.0, 4.0)]
    assert values == sorted(values)  # better hypothesis on top: softer -> worse
    # gradient scales as 1 / T at a fixed z = s / T
    _, g1 = _loss_and_grad(semer_loss, s, y)
    _, g2 = _loss_and_grad(semer_loss, 2 * s, y, temperature=2.0)
    torch.testing.assert_close(g2, g1 / 2)


def test_gradcheck():
    torch.manual_seed(2)
    s = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(3, 4, dtype=torch.float64) * 1.5)
    y[0, 3] = PAD
    y[2, 1:] = PAD
    assert torch.autograd.gradcheck(lambda x: semer_loss(x, y, temperature=0.7), (s,))
    lse = torch.tensor([0.5, -float("inf"), 1.5], dtype=torch.float64)
    es = torch.tensor([0.4, 0.0, 1.2], dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: semer_loss(x, y, temperature=0.7, other_logsumexp=lse, other_expected_semer=es), (s,)
    )


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_utterance_mode_matches_explicit_concatenation(temperature):
    torch.manual_seed(3)
    b, n, m = 5, 3, 4
    s_own = torch.randn(b, n, dtype=torch.float64) * 2
    semer_own = torch.rand(b, n, dtype=torch.float64) * 1.5
    s_other = torch.randn(b, m, dtype=torch.float64, requires_grad=True)
    semer_other = torch.rand(b, m, dtype=torch.float64) * 1.5
    semer_own[0, 2] = PAD
    semer_own[3] = PAD  # no own entries, but has others
    semer_other[1] = PAD  # no others
    semer_other[2, :2] = PAD

    ref_s = s_own.clone().requires_grad_(True)
    ref = _explicit_utterance_loss(ref_s, semer_own, s_other, semer_other, temperature)
    ref.backward()

    lse, es = _other_summaries(s_other.detach(), semer_other, temperature)
    assert lse[1] == -float("inf")
    loss, grad = _loss_and_grad(
        semer_loss, s_own, semer_own, temperature=temperature, other_logsumexp=lse, other_expected_semer=es
    )
    torch.testing.assert_close(loss, ref.detach())
    torch.testing.assert_close(grad, ref_s.grad)
    assert s_other.grad is None  # other logits held fixed


def test_other_logsumexp_minus_inf_reduces_to_domain_only():
    torch.manual_seed(4)
    s, y = torch.randn(3, 4), torch.rand(3, 4)
    y[2, 2:] = PAD
    base_loss, base_grad = _loss_and_grad(semer_loss, s, y, temperature=0.8)
    lse = torch.full((3,), -float("inf"))
    for es in (torch.zeros(3), torch.full((3,), 123.0)):  # any finite value is ignored
        loss, grad = _loss_and_grad(semer_loss, s, y, temperature=0.8, other_logsumexp=lse, other_expected_semer=es)
        torch.testing.assert_close(loss, base_loss)
        torch.testing.assert_close(grad, base_grad)


def test_other_candidates_are_detached():
    s = torch.tensor([[0.0]], requires_grad=True)
    lse = torch.tensor([LN3], requires_grad=True)
    es = torch.tensor([2.0], requires_grad=True)
    semer_loss(s, torch.tensor([[1.0]]), other_logsumexp=lse, other_expected_semer=es).backward()
    assert lse.grad is None and es.grad is None and s.grad is not None


def test_validation_errors():
    s, y = torch.zeros(2, 3), torch.zeros(2, 3)
    with pytest.raises(ValueError, match="same shape"):
        semer_loss(s, torch.zeros(2, 4))
    with pytest.raises(ValueError, match="2-D"):
        semer_loss(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="2-D"):
        semer_loss(torch.zeros(1, 2, 3), torch.zeros(1, 2, 3))
    for t in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            semer_loss(s, y, temperature=t)
    with pytest.raises(ValueError, match="together"):
        semer_loss(s, y, other_logsumexp=torch.zeros(2))
    with pytest.raises(ValueError, match="together"):
        semer_loss(s, y, other_expected_semer=torch.zeros(2))
    with pytest.raises(ValueError, match="other_logsumexp"):
        semer_loss(s, y, other_logsumexp=torch.zeros(3), other_expected_semer=torch.zeros(2))
    with pytest.raises(ValueError, match="other_expected_semer"):
        semer_loss(s, y, other_logsumexp=torch.zeros(2), other_expected_semer=torch.zeros(2, 1))
