"""An MLP from raw weight tensors and functional ops, trained with ``torch.optim.SGD``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainers.core.config import MLPConfig
from trainers.core.loop import Parts
from trainers.models.rawmodel import RawModel


def kaiming(fan_in: int, fan_out: int) -> torch.Tensor:
    """Weights ~ N(0, 2 / fan_in): keeps the activations' scale through ReLU layers (He et al., 2015)."""
    return torch.randn(fan_in, fan_out) * math.sqrt(2.0 / fan_in)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Inverted dropout: in training, zero each unit with probability p and scale the kept ones by 1/(1-p).

    The scaling keeps every unit's expected value what it is without dropout, so
    evaluation uses the network as it is: nothing dropped, nothing rescaled.
    """
    if not training or p == 0:
        return x
    keep = torch.rand_like(x) >= p
    return x * keep / (1 - p)


class LowLevelMLP(RawModel):
    """x -> relu(x W1 + b1) -> relu(. W2 + b2) -> . W3 + b3 (logits: no activation on the output).

    With ``dropout`` p > 0, each hidden layer's output goes through inverted dropout in training.
    """

    def __init__(self, sizes: tuple[int, ...], dropout: float = 0.0):
        params = {}
        for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:]), 1):
            params[f"W{i}"] = kaiming(fan_in, fan_out)
            params[f"b{i}"] = torch.zeros(fan_out)
        super().__init__(**params)
        self.layers, self.dropout = len(sizes) - 1, dropout

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1)
        for i in range(1, self.layers + 1):
            x = x @ self.params[f"W{i}"] + self.params[f"b{i}"]
            if i < self.layers:
                x = dropout(F.relu(x), self.dropout, self.training)
        return x


def build(config: MLPConfig, device: torch.device) -> Parts:
    """The model, loss and optimizer for ``config``."""
    model = LowLevelMLP((784, *config.hidden, 10), config.dropout).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    return Parts(model, F.cross_entropy, optimizer)

