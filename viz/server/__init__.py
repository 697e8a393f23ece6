"""The local visdom server: starting and stopping it, the request gate it runs behind, and visdom's front-end files."""
