"""The four models, each in its own file: what a trainer builds for the shared loop."""
