"""Softmax regression with ``torch.nn`` and ``torch.optim``: the same model as scratch-softmax."""

from __future__ import annotations

import torch
from torch import nn

from trainers.core.config import TrainConfig
from trainers.core.loop import Parts


def softmax_regression(inputs: int = 784, classes: int = 10) -> nn.Sequential:
    """Flatten + one linear layer, weights ~ N(0, 0.01^2), biases 0."""
    net = nn.Sequential(nn.Flatten(), nn.Linear(inputs, classes))
    nn.init.normal_(net[1].weight, std=0.01)
    nn.init.zeros_(net[1].bias)
    return net


def build(config: TrainConfig, device: torch.device) -> Parts:
    """The model, loss and optimizer for ``config``."""
    model = softmax_regression().to(device)
    # CrossEntropyLoss takes logits and applies log-softmax itself, stably.
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    return Parts(model, nn.CrossEntropyLoss(), optimizer)

