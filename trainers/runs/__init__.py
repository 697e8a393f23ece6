"""What the run folders under a directory hold: ``trainviz runs`` and ``compare``."""
