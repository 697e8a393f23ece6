"""Four teaching-scale trainers that share one loop and stream to a Visdom dashboard."""

__version__ = "0.3.0"
