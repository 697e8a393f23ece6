"""Where the dashboard is unless a setting says otherwise: one constant each, imported where used."""

SERVER = "http://localhost"  # the visdom server's URL (env VISDOM_SERVER_URL)
PORT = 8097  # its port (env VISDOM_PORT): visdom's own default
