"""An ``nn.Module`` MLP with a choice of activation."""

from __future__ import annotations

import torch
from torch import nn

from trainers.core.config import MLPConfig
from trainers.core.loop import Parts

# Activations as data: one entry per --activation choice (trainers.catalog.ACTIVATIONS),
# each a factory taking the negative slope (which plain ReLU ignores).
ACTIVATION_LAYERS = {"relu": lambda slope: nn.ReLU(), "leaky-relu": nn.LeakyReLU}


class MLP(nn.Module):
    """Linear layers with an activation (and dropout) between them, none after the last (it gives logits)."""

    def __init__(self, sizes: tuple[int, ...], activation: str = "relu", negative_slope: float = 0.01,
                 dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
            linear = nn.Linear(fan_in, fan_out)
            # He initialisation, matched to the activation's slope for negative inputs.
            slope = negative_slope if activation == "leaky-relu" else 0.0
            nn.init.kaiming_normal_(linear.weight, a=slope, nonlinearity="leaky_relu")
            nn.init.zeros_(linear.bias)
            layers.append(linear)
            if i < len(sizes) - 2:
                layers.append(ACTIVATION_LAYERS[activation](negative_slope))
                if dropout:
                    layers.append(nn.Dropout(dropout))
        self.net = nn.Sequential(*layers)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)


def build(config: MLPConfig, device: torch.device) -> Parts:
    """The model, loss and optimizer for ``config``."""
    model = MLP((784, *config.hidden, 10), config.activation, config.negative_slope, config.dropout).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    return Parts(model, nn.CrossEntropyLoss(), optimizer)

