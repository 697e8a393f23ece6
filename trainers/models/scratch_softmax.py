"""Softmax regression written by hand: parameters, softmax, cross-entropy and SGD.

No ``torch.nn`` layers or losses and no ``torch.optim``: autograd computes the
gradients, everything else is the arithmetic of the model.
"""

from __future__ import annotations

import torch

from trainers.core.config import TrainConfig
from trainers.core.loop import Parts
from trainers.models.rawmodel import RawModel


def softmax(logits: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax that cannot overflow.

    exp(o) overflows float32 once o > 88; subtracting each row's maximum first leaves
    the result unchanged (it cancels in the ratio) and keeps every exponent <= 0.
    """
    shifted = logits - logits.max(dim=1, keepdim=True).values
    exp = shifted.exp()
    return exp / exp.sum(dim=1, keepdim=True)


def log_softmax(logits: torch.Tensor) -> torch.Tensor:
    """log(softmax(o)) = o - logsumexp(o), with logsumexp(o) = m + log(sum(exp(o - m)))."""
    top = logits.max(dim=1, keepdim=True).values
    return logits - top - (logits - top).exp().sum(dim=1, keepdim=True).log()


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean of -log p(true class) = mean of logsumexp(o) - o_true, computed stably.

    Taking log(softmax(o)) in two steps gives log(0) = -inf once a probability
    underflows; the fused form stays finite for logits of any size. The row maximum
    is a constant shift that cancels in the difference, so no gradient flows through it.
    """
    shifted = logits - logits.detach().max(dim=1, keepdim=True).values
    log_sum_exp = shifted.exp().sum(dim=1).log()
    return (log_sum_exp - shifted.gather(1, labels.unsqueeze(1)).squeeze(1)).mean()


class SoftmaxRegression(RawModel):
    """logits = flatten(X) @ W + b, with W (784 x classes) ~ N(0, 0.01^2) and b = 0."""

    def __init__(self, inputs: int = 784, classes: int = 10):
        super().__init__(W=torch.randn(inputs, classes) * 0.01, b=torch.zeros(classes))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.params["W"] + self.params["b"]


class SGD:
    """Minibatch stochastic gradient descent with momentum and weight decay.

    For each parameter p with gradient grad, as ``torch.optim.SGD`` computes it:

        g = grad + weight_decay * p        (the gradient of an added L2 penalty)
        v = momentum * v + g               (velocity: a running sum of past steps)
        p = p - lr * v

    With momentum 0 and no weight decay this is plain SGD, p <- p - lr * grad. The loss
    is a batch mean, so its gradient is already averaged over the batch (d2l divides by
    the batch size because its loss is a sum). The settings live in ``param_groups``,
    as in torch.optim, which is where the loop's schedule sets each step's rate.
    """

    def __init__(self, params, lr: float, momentum: float = 0.0, weight_decay: float = 0.0):
        self.params = list(params)
        self.param_groups = [{"lr": lr, "momentum": momentum, "weight_decay": weight_decay}]
        self.velocity = [torch.zeros_like(param) for param in self.params]

    def zero_grad(self) -> None:
        """Forget the previous step's gradients (autograd adds to them otherwise)."""
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """Move every parameter against its (decayed, accumulated) gradient."""
        group = self.param_groups[0]
        for param, velocity in zip(self.params, self.velocity):
            g = param.grad
            if group["weight_decay"]:
                g = g.add(param, alpha=group["weight_decay"])
            if group["momentum"]:
                g = velocity.mul_(group["momentum"]).add_(g)
            param.add_(g, alpha=-group["lr"])

    def state_dict(self) -> dict:
        """The settings and the velocities: what a resumed run needs to take the same next step."""
        return {"param_groups": [dict(self.param_groups[0])], "velocity": [v.clone() for v in self.velocity]}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` saved."""
        self.param_groups = [dict(state["param_groups"][0])]
        for velocity, saved in zip(self.velocity, state["velocity"]):
            velocity.copy_(saved)


def build(config: TrainConfig, device: torch.device) -> Parts:
    """The model, loss and optimizer for ``config``."""
    model = SoftmaxRegression().to(device)
    return Parts(model, cross_entropy, SGD(model.parameters(), config.lr, config.momentum, config.weight_decay))

