"""What a value read back from a file is: run folders and events files may be damaged or hostile.

JSON holds integers of any size (up to 4,300 digits), which no float, plot or format
string takes: a number here is one a float can hold, and a whole number one that fits in
64 bits, as every step, epoch and pid does.
"""

from __future__ import annotations

import sys

FLOAT_MAX = sys.float_info.max
WHOLE_RANGE = (-2**63, 2**64)  # int64 and uint64, as torch's seeds take them


def is_whole(value) -> bool:
    """Whether a value read back is a whole number within 64 bits (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and WHOLE_RANGE[0] <= value < WHOLE_RANGE[1]


def is_number(value) -> bool:
    """Whether a value read back is a number a float holds (not a bool; nan and infinities included).

    >>> is_number(0.5), is_number(float("nan")), is_number(10**400), is_number(True)
    (True, True, False, False)
    """
    if isinstance(value, float):
        return True
    return isinstance(value, int) and not isinstance(value, bool) and -FLOAT_MAX <= value <= FLOAT_MAX
