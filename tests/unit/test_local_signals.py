"""A stop signal that arrives while the ledger is written takes effect after the write.

Raised in the middle of openpyxl's writer, it left the writer half-way, and the run
printed a traceback at exit (seen once in test_local_stop under load); the signals
themselves are real (``os.kill`` of this process)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from hpo.local.runner import Stopped, _signals_deferred, _signals_held, _stop_signals
from hpo.store.keys import StoreError


@pytest.fixture(autouse=True)
def _python_ctrl_c() -> Iterator[None]:
    """Ctrl-C as a fresh ``hpo run`` process has it (Python's default handler), whatever
    an earlier test in this worker process left behind; restored afterwards."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    yield
    for sig, handler in before.items():
        if handler is not None:  # None: a handler not set from Python, nothing to restore
            signal.signal(sig, handler)


def test_sigterm_during_a_ledger_write_stops_the_run_after_the_write() -> None:
    steps: list[str] = []
    with pytest.raises(Stopped) as stopped, _stop_signals(), _signals_held():
        os.kill(os.getpid(), signal.SIGTERM)
        steps.append("written")  # the write goes on to its end
    assert steps == ["written"]
    assert stopped.value.signum == signal.SIGTERM


def test_ctrl_c_during_a_ledger_write_interrupts_after_the_write() -> None:
    steps: list[str] = []
    with pytest.raises(KeyboardInterrupt), _signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("written")
    assert steps == ["written"]


def test_a_signal_ignored_while_cleaning_up_stays_ignored() -> None:
    """The last write of a stopped run is under ``_signals_deferred``: a second SIGTERM
    then must not cut it short, before or after the write."""
    with _signals_deferred(), _signals_held():
        os.kill(os.getpid(), signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # restored on the way out


def test_a_stop_held_during_a_failed_write_is_not_lost() -> None:
    """During an outage the write fails (the loop would go on after a warning): the
    SIGTERM that came meanwhile still stops the run."""
    with pytest.raises(Stopped), _stop_signals(), _signals_held():
        os.kill(os.getpid(), signal.SIGTERM)
        raise StoreError("the bucket does not answer")


def test_a_second_ctrl_c_while_a_write_is_held_acts_at_once() -> None:
    steps: list[str] = []
    with pytest.raises(KeyboardInterrupt), _signals_held():
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("first held")
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("not reached")
    assert steps == ["first held"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
