"""The hand-written softmax regression: exact values and stability at extreme logits."""

import pytest
import torch
import torch.nn.functional as F

from trainers.models.scratch_softmax import SGD, SoftmaxRegression, cross_entropy, log_softmax, softmax


def test_softmax_of_small_logits_matches_the_definition():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    expected = torch.tensor([[0.09003057, 0.24472847, 0.66524096], [1 / 3, 1 / 3, 1 / 3]])
    assert torch.allclose(softmax(logits), expected, atol=1e-7)


@pytest.mark.parametrize("scale", [1.0, 1e2, 1e4])
def test_softmax_and_cross_entropy_stay_finite_and_match_torch(scale):
    torch.manual_seed(0)
    logits = torch.randn(64, 10) * scale
    logits[0] = torch.tensor([1e4, -1e4, 0, 0, 0, 0, 0, 0, 0, 0])
    logits[1] = torch.tensor([-1e4] * 9 + [1e4])
    labels = torch.randint(0, 10, (64,))
    labels[0], labels[1] = 1, 0  # true classes whose probability underflows to 0

    probs = softmax(logits)
    assert torch.isfinite(probs).all()
    assert torch.allclose(probs.sum(dim=1), torch.ones(64))
    assert torch.allclose(probs, torch.softmax(logits, dim=1))
    assert torch.allclose(log_softmax(logits), torch.log_softmax(logits, dim=1))

    ours, reference = cross_entropy(logits, labels), F.cross_entropy(logits, labels)
    assert torch.isfinite(ours)
    assert torch.allclose(ours, reference, rtol=1e-6)


def test_naive_softmax_would_overflow_where_ours_does_not():
    logits = torch.tensor([[1e4, 0.0]])
    naive = logits.exp() / logits.exp().sum(dim=1, keepdim=True)
    assert torch.isnan(naive).any()
    assert torch.equal(softmax(logits), torch.tensor([[1.0, 0.0]]))


def test_cross_entropy_gradient_matches_torch():
    logits = (torch.randn(8, 10) * 50).requires_grad_()
    labels = torch.randint(0, 10, (8,))
    cross_entropy(logits, labels).backward()
    ours = logits.grad.clone()
    logits.grad = None
    F.cross_entropy(logits, labels).backward()
    assert torch.allclose(ours, logits.grad, atol=1e-7)


def test_hand_written_sgd_takes_one_exact_step():
    model = SoftmaxRegression(inputs=4, classes=3)
    sgd = SGD(model.parameters(), lr=0.5)
    before = {name: t.detach().clone() for name, t in model.named_parameters()}
    x, y = torch.ones(2, 1, 2, 2), torch.tensor([0, 2])
    sgd.zero_grad()
    cross_entropy(model(x), y).backward()
    grads = {name: t.grad.clone() for name, t in model.named_parameters()}
    sgd.step()
    for name, tensor in model.named_parameters():
        assert torch.allclose(tensor, before[name] - 0.5 * grads[name])
    sgd.zero_grad()
    assert all(t.grad is None for t in model.parameters())


def test_scratch_model_matches_nn_linear_with_the_same_weights():
    from trainers.models.nn_softmax import softmax_regression

    scratch, net = SoftmaxRegression(), softmax_regression()
    with torch.no_grad():
        net[1].weight.copy_(scratch.params["W"].T)
        net[1].bias.copy_(scratch.params["b"])
    x = torch.rand(5, 1, 28, 28)
    assert torch.allclose(scratch(x), net(x), atol=1e-6)
