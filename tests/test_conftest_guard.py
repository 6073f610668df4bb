"""The test run's own guard: children that would keep the interpreter from exiting."""
import multiprocessing
import signal
import time

from conftest import end_leaked_children


def _sleep_through_sigterm(ready, seconds: float) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ready.set()
    time.sleep(seconds)


def test_a_child_that_ignores_sigterm_is_killed_at_the_end_of_the_run():
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    child = context.Process(target=_sleep_through_sigterm, args=(ready, 3600), daemon=True, name="stuck-child")
    child.start()
    try:
        assert ready.wait(60)
        child.terminate()
        child.join(0.5)
        assert child.is_alive(), "the child was meant to ignore SIGTERM"
        began = time.monotonic()
        leaked = end_leaked_children()
        assert time.monotonic() - began < 5
        assert not child.is_alive()
        assert child.exitcode == -signal.SIGKILL
        assert any("stuck-child" in name for name in leaked)
    finally:
        if child.is_alive():
            child.kill()
            child.join()
