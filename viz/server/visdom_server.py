"""The visdom server trainviz starts: visdom's own, behind a gate that other web pages cannot pass.

visdom 0.2.4 trusts every request: a page on any site the user has open could open a
websocket to the dashboard, post windows into it (text panes render raw HTML, so that
is script in every viewer's browser) or delete environments, and a DNS-rebinding page
could do the same through a name of its own. The gate refuses, with 403, before any
visdom handler runs:

- a request whose ``Host`` is not a loopback name (``localhost``, ``127.x.x.x``,
  ``::1``), a name given with ``--allow-host``, or, with ``--public``, one of this
  machine's own names and addresses;
- a request carrying an ``Origin`` other than the address it was sent to: browsers send
  one with every websocket handshake and every cross-site POST or DELETE, while
  trainviz's own sender and visdom's Python client send none.

Run as ``python -m viz.server.visdom_server [--allow-host NAME ...] [--public] VISDOM_ARGS``;
``trainviz server start`` does this. The rest of the arguments go to visdom unchanged.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
import sys
import urllib.parse

import tornado.netutil
import tornado.web

from viz.dashboard.client import import_visdom

SERVER_NICE = 10  # scheduling priority below training's (0): the dashboard yields the cores
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


def host_name(host_header: str) -> str:
    """``localhost:8097`` -> ``localhost``; ``[::1]:8097`` -> ``::1``; lower case."""
    return (urllib.parse.urlsplit(f"//{host_header}").hostname or "").lower()


def is_loopback(name: str) -> bool:
    """Whether ``name`` is a loopback host name or address."""
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def machine_names() -> set[str]:
    """This machine's host names and the addresses they resolve to."""
    names = {socket.gethostname(), socket.getfqdn()}
    addresses = set()
    for name in names:
        try:
            addresses |= {info[4][0] for info in socket.getaddrinfo(name, None)}
        except OSError:
            continue
    return {name.lower() for name in names | addresses}


class Gate:
    """Which requests reach visdom."""

    def __init__(self, allowed_hosts: set[str]):
        self.allowed_hosts = {name.lower() for name in allowed_hosts}

    def refusal(self, request: tornado.httputil.HTTPServerRequest) -> str | None:
        """Why ``request`` is refused, or None when it may pass."""
        name = host_name(request.host)
        if not (is_loopback(name) or name in self.allowed_hosts):
            return f"Host {request.host!r} is not allowed (trainviz server start --allow-host NAME allows one)"
        origin = request.headers.get("Origin")
        if origin is not None and urllib.parse.urlsplit(origin).netloc.lower() != request.host.lower():
            return f"requests from {origin!r} are not allowed"
        return None


class Quiet(tornado.web.Application):
    """A tornado Application with debug mode off, whatever its subclass asks for.

    visdom turns tornado's debug mode on, whose autoreloader looks at every loaded
    module's file twice a second: a fifth of a core here while nobody uses the server,
    taken from training. Debug mode also serves tracebacks to the browser.
    """

    def __init__(self, handlers=None, default_host=None, transforms=None, **settings):
        settings.update(debug=False, autoreload=False, serve_traceback=False)
        super().__init__(handlers, default_host, transforms, **settings)


def gated(application: type[tornado.web.Application], gate: Gate) -> type[tornado.web.Application]:
    """A subclass of visdom's tornado Application that checks every request with ``gate`` first."""

    # Quiet sits between visdom's Application and tornado's, where visdom's settings pass.
    class GatedApplication(application, Quiet):
        def find_handler(self, request, **kwargs):
            reason = gate.refusal(request)
            if reason is not None:
                return self.get_handler_delegate(request, Refused, {"reason": reason})
            return super().find_handler(request, **kwargs)

    return GatedApplication


class Refused(tornado.web.RequestHandler):
    """Answers 403 with the reason, whatever the method; a websocket handshake gets the same."""

    def initialize(self, reason: str) -> None:
        self.reason = reason

    def prepare(self) -> None:
        self.set_status(403)
        self.finish(f"403 Forbidden: {self.reason}\n")


def main(argv: list[str] | None = None) -> None:
    """Parse trainviz's options, then run visdom's server behind the gate."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="a host name the browser may use besides the loopback names")
    parser.add_argument("--public", action="store_true", help="also allow this machine's own names")
    ours, visdom_args = parser.parse_known_args(argv)
    allowed = set(ours.allow_host) | (machine_names() if ours.public else set())

    # Training shares the machine's cores with the server: it should win them.
    os.nice(SERVER_NICE)
    import_visdom()
    from visdom.server import app, run_server

    run_server.Application = gated(app.Application, Gate(allowed))
    tornado.netutil.bind_sockets = on_the_port_asked_for(tornado.netutil.bind_sockets)
    sys.argv = [sys.argv[0], *visdom_args]
    # visdom's own start would first check its front-end files online; trainviz installs them.
    try:
        run_server.main()
    except OSError as err:
        sys.exit(f"visdom server: cannot listen: {err.strerror or err}")


def on_the_port_asked_for(bind_sockets):
    """tornado's ``bind_sockets``, refusing port 0.

    visdom 0.3.0 moves to a random free port when its own is taken, where no trainer,
    pid file or browser would look for it; trainviz's server fails on the port instead.
    """

    def bind(port, *args, **kwargs):
        if port == 0:
            raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
        return bind_sockets(port, *args, **kwargs)

    return bind


if __name__ == "__main__":
    main()
