"""Signal handlers for the long-running commands (tracking, training).

Each command stops cleanly on the signals that end programs, closing cameras, recordings
and sinks or checkpointing, and puts the handlers it replaced back when it is done, so it
can be called from other Python code without changing that program's behaviour.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable


class SignalHandlers:
    """Installs ``handler`` for the named signals and restores the previous handlers.

    A signal that is ignored stays ignored: a command started under ``nohup`` must not stop
    on SIGHUP, nor a background job of a shell on the SIGINT meant for the foreground.
    Signals this platform lacks (SIGHUP on Windows) are left out. Handlers can only be set
    from the main thread; from any other, nothing is installed and the process keeps its
    handlers.
    """

    def __init__(self, names: Iterable[str], handler: Callable) -> None:
        self.names = tuple(names)
        self.handler = handler
        self.previous: dict[int, object] = {}

    def install(self) -> SignalHandlers:
        if threading.current_thread() is not threading.main_thread():
            return self
        try:
            for name in self.names:
                number = getattr(signal, name, None)
                if number is None or signal.getsignal(number) is signal.SIG_IGN:
                    continue
                self.previous[number] = signal.signal(number, self.handler)
        except BaseException:  # a signal while installing: put back what was replaced
            self.restore()
            raise
        return self

    def restore(self) -> None:
        for number, handler in self.previous.items():
            # None: the handler was not set from Python and cannot be put back as it was.
            signal.signal(number, signal.SIG_DFL if handler is None else handler)
        self.previous.clear()

    def __enter__(self) -> SignalHandlers:
        return self.install()

    def __exit__(self, *exc_info) -> None:
        self.restore()
