"""R3 `combined_loss`: alpha * R1 + (1 - alpha) * R2, and the loss registry."""
import functools
import math

import pytest
import torch

from loss_helpers import LN3, PAD, loss_and_grad as _loss_and_grad
from rerank.losses import (
    LOSSES,
    combined_loss,
    crossentropy_loss,
    get_loss,
    semer_loss,
)

#: alpha and T have no defaults in the function (configs/loss/combined.yaml holds the toolkit's);
#: the tests below were written for alpha = 0.5, T = 1 where they pass neither
combined = functools.partial(combined_loss, alpha=0.5, temperature=1.0)


def _batch(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    s = torch.randn(4, 5, generator=g, dtype=dtype) * 2
    # SemER on a grid so that some are exactly 0 (correct hypotheses)
    y = torch.randint(0, 4, (4, 5), generator=g).to(dtype) / 2
    y[0, 3:] = PAD
    y[2, 1:] = PAD
    return s, y


def test_registry():
    assert get_loss("combined") is combined_loss
    assert {n: (e.fn, e.target, e.listwise) for n, e in LOSSES.items()} == {
        "semer": (semer_loss, "semer", True), "crossentropy": (crossentropy_loss, "correct", False),
        "combined": (combined_loss, "semer", True)}
    with pytest.raises(ValueError, match="combined, crossentropy, semer"):
        get_loss("listnet")


def test_alpha_and_temperature_have_no_defaults():
    s, y = torch.tensor([[0.0, LN3]]), torch.tensor([[1.0, 0.0]])
    with pytest.raises(TypeError, match="alpha"):
        combined_loss(s, y, temperature=1.0)
    with pytest.raises(TypeError, match="temperature"):
        combined_loss(s, y, alpha=0.5)


def test_hand_computed_value():
    # logits [0, ln 3], SemER [1, 0]
    # R1: q = [1/4, 3/4] -> 0.25
    # R2: y_correct = (SemER == 0) = [0, 1]; sigmoid = [1/2, 3/4]
    #     BCE = [-ln(1 - 1/2), -ln(3/4)] = [ln 2, ln(4/3)] -> mean = ln(8/3) / 2 ~ 0.4904
    # alpha = 0.5 -> 0.5 * 0.25 + 0.5 * ln(8/3) / 2 ~ 0.3702
    s, y = torch.tensor([[0.0, LN3]]), torch.tensor([[1.0, 0.0]])
    expected = 0.5 * 0.25 + 0.5 * math.log(8 / 3) / 2
    torch.testing.assert_close(combined(s, y), torch.tensor(expected))
    # alpha = 0.8 -> 0.8 * 0.25 + 0.2 * ln(8/3) / 2
    torch.testing.assert_close(combined(s, y, alpha=0.8), torch.tensor(0.2 + 0.1 * math.log(8 / 3)))


def test_alpha_one_and_zero_are_the_pure_losses():
    s, y = _batch()
    target = torch.where(y == PAD, y, (y == 0).float())
    loss1, grad1 = _loss_and_grad(combined, s, y, alpha=1.0, temperature=0.7)
    ref1, rgrad1 = _loss_and_grad(semer_loss, s, y, temperature=0.7)
    torch.testing.assert_close(loss1, ref1, rtol=0, atol=0)
    torch.testing.assert_close(grad1, rgrad1)
    loss0, grad0 = _loss_and_grad(combined, s, y, alpha=0.0, temperature=0.7)
    ref0, rgrad0 = _loss_and_grad(crossentropy_loss, s, target)
    torch.testing.assert_close(loss0, ref0, rtol=0, atol=0)
    torch.testing.assert_close(grad0, rgrad0)


@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_is_the_convex_combination(alpha):
    s, y = _batch(1)
    lse = torch.tensor([0.5, -float("inf"), 2.0, -1.0])
    es = torch.tensor([0.3, 0.0, 1.0, 0.5])
    kw = dict(other_logsumexp=lse, other_expected_semer=es)
    target = torch.where(y == PAD, y, (y == 0).float())
    expected = alpha * semer_loss(s, y, temperature=2.0, **kw) + (1 - alpha) * crossentropy_loss(s, target)
    torch.testing.assert_close(combined(s, y, alpha=alpha, temperature=2.0, **kw), expected)


def test_explicit_y_correct():
    s, y = _batch(2)
    default = combined(s, y, alpha=0.4)
    explicit = (y == 0).float()
    explicit[y == PAD] = 123.0  # values on padded entries are ignored
    torch.testing.assert_close(combined(s, y, alpha=0.4, y_correct=explicit), default)
    # another target changes only the CE term
    other = torch.where(y == PAD, y, torch.full_like(y, 0.5))
    expected = 0.4 * semer_loss(s, y) + 0.6 * crossentropy_loss(s, other)
    torch.testing.assert_close(combined(s, y, alpha=0.4, y_correct=other.clamp(min=0)), expected)
    with pytest.raises(ValueError, match="y_correct"):
        combined(s, y, y_correct=torch.zeros(4, 4))


@pytest.mark.parametrize("alpha", [-0.1, 1.1, float("nan"), float("inf"), "x", None])
def test_bad_alpha(alpha):
    s, y = _batch()
    with pytest.raises(ValueError, match="alpha"):
        combined(s, y, alpha=alpha)


def test_padding_invariance():
    s, y = _batch(3)
    base_loss, base_grad = _loss_and_grad(combined, s, y, alpha=0.6)
    extreme = torch.tensor([1e30, -1e30, 1e4, float("inf"), -float("inf")])
    s_pad = torch.cat([s[:, :2], extreme.expand(4, 5), s[:, 2:]], dim=1)
    y_pad = torch.cat([y[:, :2], torch.full((4, 5), PAD), y[:, 2:]], dim=1)
    loss, grad = _loss_and_grad(combined, s_pad, y_pad, alpha=0.6)
    torch.testing.assert_close(loss, base_loss)
    torch.testing.assert_close(torch.cat([grad[:, :2], grad[:, 7:]], dim=1), base_grad)
    assert torch.equal(grad[:, 2:7], torch.zeros(4, 5))
    # padded positions of the original batch get zero grad too
    assert torch.equal(base_grad[y == PAD], torch.zeros(int((y == PAD).sum())))


def test_all_padding_row_and_batch_give_no_nan():
    s = torch.tensor([[0.0, LN3], [1e4, -1e4]])
    y = torch.tensor([[1.0, 0.0], [PAD, PAD]])
    loss, grad = _loss_and_grad(combined, s, y)
    torch.testing.assert_close(loss, torch.tensor(0.5 * 0.25 + 0.5 * math.log(8 / 3) / 2))
    assert torch.isfinite(grad).all() and torch.equal(grad[1], torch.zeros(2))

    s = torch.tensor([[1e4, -1e4], [0.0, 3.0]], requires_grad=True)
    loss = combined(
        s,
        torch.full((2, 2), PAD),
        other_logsumexp=torch.tensor([1.0, -float("inf")]),
        other_expected_semer=torch.tensor([0.2, 0.0]),
    )
    assert loss.grad_fn is not None and loss.item() == 0.0
    loss.backward()
    assert torch.equal(s.grad, torch.zeros(2, 2))


@pytest.mark.parametrize("temperature", [0.1, 1.0, 10.0])
def test_numerical_stability_extreme_logits(temperature):
    s = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 1e4]])
    y = torch.tensor([[0.0, 1.0, 0.5], [0.0, 1.5, PAD]])
    loss, grad = _loss_and_grad(
        combined,
        s,
        y,
        temperature=temperature,
        other_logsumexp=torch.tensor([1e4, -float("inf")]),
        other_expected_semer=torch.tensor([0.7, 0.0]),
    )
    assert torch.isfinite(loss) and torch.isfinite(grad).all()


def test_temperature_affects_only_the_semer_term():
    # T = 2 on logits [0, ln 3], SemER [1, 0]: R1 = 1 / (1 + sqrt 3) (q = [1, sqrt 3] / (1 + sqrt 3));
    # R2 is unchanged: ln(8/3) / 2
    s, y = torch.tensor([[0.0, LN3]]), torch.tensor([[1.0, 0.0]])
    expected = 0.5 / (1 + math.sqrt(3)) + 0.5 * math.log(8 / 3) / 2
    torch.testing.assert_close(combined(s, y, temperature=2.0), torch.tensor(expected))
    s, y = _batch(4)
    for t in (0.5, 3.0):
        diff = combined(s, y, alpha=0.3, temperature=t) - combined(s, y, alpha=0.3)
        torch.testing.assert_close(diff, 0.3 * (semer_loss(s, y, temperature=t) - semer_loss(s, y)))


def test_gradcheck():
    s, y = _batch(5, dtype=torch.float64)
    s.requires_grad_(True)
    lse = torch.tensor([0.5, -float("inf"), 2.0, -1.0], dtype=torch.float64)
    es = torch.tensor([0.3, 0.0, 1.0, 0.5], dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: combined(x, y, alpha=0.35, temperature=0.8), (s,))
    assert torch.autograd.gradcheck(
        lambda x: combined(x, y, alpha=0.35, temperature=0.8, other_logsumexp=lse, other_expected_semer=es),
        (s,),
    )


def test_validation_errors():
    with pytest.raises(ValueError, match="same shape"):
        combined(torch.zeros(2, 3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match="temperature"):
        combined(torch.zeros(2, 3), torch.zeros(2, 3), temperature=0.0)
    with pytest.raises(ValueError, match="other_logsumexp"):
        combined(
            torch.zeros(2, 3), torch.zeros(2, 3), other_logsumexp=torch.zeros(1), other_expected_semer=torch.zeros(2)
        )


def test_the_joint_models_grouped_form_is_combined_loss():
    """The benchmark's joint model writes R3 on flat ragged rows; it must be the same loss."""
    from benchmarks.alternatives import grouped_combined_loss

    gen = torch.Generator().manual_seed(3)
    lengths = [3, 1, 5, 2]
    group = torch.cat([torch.full((n,), i) for i, n in enumerate(lengths)])
    s = torch.randn(len(group), generator=gen, dtype=torch.float64)
    semer = torch.randint(0, 3, (len(group),), generator=gen).to(torch.float64) / 2
    correct = (torch.rand(len(group), generator=gen) < 0.4).to(torch.float64)
    y_pred = torch.zeros(len(lengths), max(lengths), dtype=torch.float64)
    y_true = torch.full_like(y_pred, PAD)
    y_correct = torch.zeros_like(y_pred)
    pos = torch.cat([torch.arange(n) for n in lengths])
    y_pred[group, pos], y_true[group, pos], y_correct[group, pos] = s, semer, correct
    for alpha, t in ((0.1, 0.5), (0.5, 1.0), (1.0, 2.0), (0.0, 1.0)):
        flat = grouped_combined_loss(s, group, len(lengths), semer, correct, alpha, t)
        padded = combined_loss(y_pred, y_true, alpha=alpha, temperature=t, y_correct=y_correct)
        assert flat.item() == pytest.approx(padded.item(), rel=1e-12, abs=1e-12), (alpha, t)
