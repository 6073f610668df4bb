import signal
import threading

import pytest

from tracker.signals import SignalHandlers

# SIGUSR1 and SIGUSR2 stand in for the stop signals, which a test must not take over.
pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGUSR1"), reason="needs POSIX signals")


def _handler(signum, frame):
    pass


def test_handlers_go_in_and_the_previous_ones_come_back():
    before = signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    try:
        with SignalHandlers(["SIGUSR1"], _handler):
            assert signal.getsignal(signal.SIGUSR1) is _handler
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL
    finally:
        signal.signal(signal.SIGUSR1, before)


def test_an_ignored_signal_and_one_this_platform_lacks_are_left_alone():
    before = signal.signal(signal.SIGUSR2, signal.SIG_IGN)
    try:
        with SignalHandlers(["SIGUSR2", "SIGNOSUCHSIGNAL"], _handler) as handlers:
            assert signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN
            assert handlers.previous == {}
        assert signal.getsignal(signal.SIGUSR2) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGUSR2, before)


def test_off_the_main_thread_nothing_is_installed():
    # signal.signal raises there; the caller keeps the process's handlers instead.
    seen = []

    def install():
        with SignalHandlers(["SIGUSR1"], _handler) as handlers:
            seen.append((dict(handlers.previous), signal.getsignal(signal.SIGUSR1) is _handler))

    thread = threading.Thread(target=install)
    thread.start()
    thread.join()
    assert seen == [({}, False)]


def test_an_interrupt_while_installing_puts_back_what_went_in(monkeypatch):
    real_signal = signal.signal
    calls = []

    def interrupted_on_the_second(signum, handler):
        calls.append(signum)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_signal(signum, handler)

    before = {number: real_signal(number, signal.SIG_DFL) for number in (signal.SIGUSR1, signal.SIGUSR2)}
    monkeypatch.setattr(signal, "signal", interrupted_on_the_second)
    handlers = SignalHandlers(["SIGUSR1", "SIGUSR2"], _handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            handlers.install()
        monkeypatch.undo()
        assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL and handlers.previous == {}
    finally:
        monkeypatch.undo()
        for number, handler in before.items():
            signal.signal(number, handler)
