"""The dashboard side of trainviz: the public API for any training loop, sinks, Visdom windows, the server.

``viz.init`` starts a run (see ``viz.api``); ``viz.Animator`` draws what Dive into Deep
Learning's Animator draws, live. Importing ``viz`` imports neither torch nor visdom.
"""

from viz.animator import Animator
from viz.api import Run, init
from viz.dashboard.controls import Request

__all__ = ["Animator", "Request", "Run", "init"]
