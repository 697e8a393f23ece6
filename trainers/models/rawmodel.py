"""A model made of plain tensors: what ``nn.Module`` does for you, written out."""

from __future__ import annotations

from collections.abc import Iterator

import torch


class RawModel:
    """Holds named leaf tensors that require gradients; subclasses write ``forward``.

    It offers the handful of ``nn.Module`` methods the loop and the checkpoints use
    (calling, ``train``/``eval``, ``parameters``, ``named_parameters``, ``state_dict``,
    ``load_state_dict``), so a from-scratch model trains in the same loop as a
    ``torch.nn`` one.
    """

    def __init__(self, **params: torch.Tensor):
        self.params = {name: tensor.requires_grad_() for name, tensor in params.items()}
        self.training = True  # what dropout asks: drop units in training, never in evaluation

    def train(self, mode: bool = True) -> RawModel:
        """Switch to training mode (or out of it, with ``mode=False``)."""
        self.training = mode
        return self

    def eval(self) -> RawModel:
        """Switch to evaluation mode."""
        return self.train(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images."""
        raise NotImplementedError

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward(images)

    def to(self, device: torch.device) -> RawModel:
        """Move every tensor to ``device`` (they stay leaves that require gradients)."""
        self.params = {name: t.detach().to(device).requires_grad_() for name, t in self.params.items()}
        return self

    def named_parameters(self) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, tensor) for every trained tensor."""
        return iter(self.params.items())

    def parameters(self) -> Iterator[torch.Tensor]:
        """Every trained tensor."""
        return iter(self.params.values())

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Detached copies of the tensors, for checkpoints."""
        return {name: tensor.detach().clone() for name, tensor in self.params.items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy saved values into the tensors in place (shapes must match)."""
        with torch.no_grad():
            for name, tensor in self.params.items():
                tensor.copy_(state[name])
