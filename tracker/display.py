"""Whether a live window can be shown: the check behind the run being headless or not.

An X display named by ``DISPLAY`` that no server answers (an SSH session without X
forwarding, a container or tmux that inherited the variable, a desktop since logged out)
must count as none: OpenCV's Qt and Open3D would otherwise abort the process or draw
offscreen where nobody sees it.
"""

from __future__ import annotations

import functools
import re
import socket
import sys

#: Where X servers listen on Unix sockets (and, on Linux, in the abstract namespace).
X11_SOCKET_DIR = "/tmp/.X11-unix"
#: How long a TCP display (``host:N``, as SSH X forwarding sets) has to accept.
CONNECT_TIMEOUT_S = 0.5

#: ``[host]:N[.screen]``; an IPv6 host in brackets or written out (``::1:0``, as Xlib reads it).
_DISPLAY = re.compile(r"^(?:\[(?P<bracketed>[^\]]*)\]|(?P<host>.*?)):(?P<number>\d+)(?:\.\d+)?$")


def _connects(family: int, address, timeout_s: float) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.settimeout(timeout_s)
        try:
            probe.connect(address)
        except OSError:
            return False
    return True


@functools.lru_cache(maxsize=8)
def x_server_answers(display: str, socket_dir: str = X11_SOCKET_DIR, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether an X server accepts connections at ``display`` (``[host]:N[.screen]``)."""
    match = _DISPLAY.match(display.strip())
    if match is None:
        return False
    host, number = match["bracketed"] if match["bracketed"] is not None else match["host"], int(match["number"])
    if host in ("", "unix"):
        path = f"{socket_dir}/X{number}"
        if hasattr(socket, "AF_UNIX") and _connects(socket.AF_UNIX, path, timeout_s):
            return True
        if sys.platform.startswith("linux") and _connects(socket.AF_UNIX, "\0" + path, timeout_s):
            return True
        if host == "unix":
            return False
        host = "localhost"  # a local display may listen on TCP only
    try:  # every address family the name resolves to (SSH may forward on ::1 only)
        socket.create_connection((host, 6000 + number), timeout=timeout_s).close()
    except OSError:
        return False
    return True


def x_display_problem(environ, platform: str, answers=x_server_answers) -> str | None:
    """Why no X window can open (None where one can): no ``DISPLAY`` at all, or one that no
    X server answers. Windows and macOS always have a display."""
    if platform.startswith(("win", "darwin")):
        return None
    display = environ.get("DISPLAY")
    if not display:
        return "no display (DISPLAY is not set)"
    if not answers(display):
        return f"no X server answers at DISPLAY={display}"
    return None
