"""The training core: settings, data, the loop, the learning-rate schedule, the run folder, ``train``, and what a run reports."""
