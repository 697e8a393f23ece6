"""Learning-rate schedules: the rate of every step as a pure function of the step.

A function of the step alone means a resumed run continues on exactly the same curve,
and the dashboard can draw the rate without asking the optimizer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "cosine", "step")
STEP_FACTOR = 0.1  # the "step" schedule multiplies the rate by this ...
STEP_AT = (0.5, 0.75)  # ... once half of the epochs are done, and again at three quarters


@dataclass(frozen=True)
class Schedule:
    """The learning rate of each optimizer step of a run.

    - constant: ``lr`` throughout.
    - cosine: from ``lr`` down to 0 along half a cosine, step by step over the whole run.
    - step: ``lr``, then x0.1 from the epoch halfway through, x0.01 from three quarters in.

    Example:
        >>> cosine = Schedule("cosine", lr=0.1, epochs=2, steps_per_epoch=10)
        >>> cosine(0), round(cosine(10), 4), round(cosine(19), 4)
        (0.1, 0.05, 0.0006)
        >>> [Schedule("step", 0.1, 4, 10)(epoch * 10) for epoch in range(4)]
        [0.1, 0.1, 0.010000000000000002, 0.0010000000000000002]
    """

    kind: str
    lr: float
    epochs: int
    steps_per_epoch: int

    def __call__(self, step: int) -> float:
        """The rate of the optimizer step that follows ``step`` steps already taken."""
        if self.kind == "cosine":
            total = self.epochs * self.steps_per_epoch
            return self.lr * 0.5 * (1 + math.cos(math.pi * min(step, total) / total))
        if self.kind == "step":
            epoch = step // self.steps_per_epoch
            passed = sum(epoch >= math.ceil(share * self.epochs) for share in STEP_AT)
            return self.lr * STEP_FACTOR ** passed
        return self.lr
