"""An MLP from raw weight tensors and functional ops, trained with ``torch.optim.SGD``."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trainers.config import MLPConfig
from trainers.loop import Parts
from trainers.rawmodel import RawModel



def kaiming(fan_in: int, fan_out: int) -> torch.Tensor:
    """Weights ~ N(0, 2 / fan_in): keeps the activations' scale through ReLU layers (He et al., 2015)."""
    return torch.randn(fan_in, fan_out) * math.sqrt(2.0 / fan_in)


class LowLevelMLP(RawModel):
    """x -> relu(x W1 + b1) -> relu(. W2 + b2) -> . W3 + b3 (logits: no activation on the output)."""

    def __init__(self, sizes: tuple[int, ...]):
        params = {}
        for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:]), 1):
            params[f"W{i}"] = kaiming(fan_in, fan_out)
            params[f"b{i}"] = torch.zeros(fan_out)
        super().__init__(**params)
        self.layers = len(sizes) - 1

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.flatten(1)
        for i in range(1, self.layers + 1):
            x = x @ self.params[f"W{i}"] + self.params[f"b{i}"]
            if i < self.layers:
                x = F.relu(x)
        return x


def build(config: MLPConfig, device: torch.device) -> Parts:
    """The model, loss and optimizer for ``config``."""
    model = LowLevelMLP((784, *config.hidden, 10)).to(device)
    return Parts(model, F.cross_entropy, torch.optim.SGD(model.parameters(), lr=config.lr))

