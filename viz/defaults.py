"""Where the dashboard is unless a setting says otherwise: one constant each, imported where used."""

import urllib.parse

SERVER = "http://localhost"  # the visdom server's URL (env VISDOM_SERVER_URL)
PORT = 8097  # its port (env VISDOM_PORT): visdom's own default


def server_problem(url: str) -> str | None:
    """Why ``url`` is not a server URL as trainviz takes one (http or https, a host, no path, no port:
    the port is a setting of its own); None when it is one.

    >>> server_problem("http://localhost"), server_problem("http://localhost:8097")
    (None, 'names a port')
    """
    try:
        parsed = urllib.parse.urlparse(url)
        port = parsed.port
    except ValueError:  # a malformed host ("http://[::1") or port
        return f"is not a server URL like {SERVER}"
    if parsed.scheme not in ("http", "https") or not parsed.hostname or parsed.path not in ("", "/"):
        return f"is not a server URL like {SERVER}"
    return "names a port" if port is not None else None
