"""The operator's liveness (hpo.kube.liveness): red past its window without an answer from the
API server, green again at the next answer. The operator process against the emulated
cluster: tests/integration/test_liveness.py."""

from __future__ import annotations

import pytest

from hpo.kube.liveness import ApiContact, ApiUnreachable


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Api:
    """An API server that answers, or is gone (``ping`` raises as the client does)."""

    def __init__(self) -> None:
        self.up = True

    def ping(self) -> None:
        if not self.up:
            raise ConnectionRefusedError("[Errno 111] Connection refused")


def test_red_past_the_window_without_an_answer_green_at_the_next() -> None:
    clock, api = Clock(), Api()
    contact = ApiContact(api.ping, window_s=30, clock=clock)
    assert contact.try_once()
    assert contact.check() == {"lastAnswerSecondsAgo": 0.0, "windowSeconds": 30}
    api.up = False
    clock.now += 30
    assert not contact.try_once()
    assert contact.check()["lastAnswerSecondsAgo"] == 30.0  # within the window: green
    clock.now += 1
    with pytest.raises(ApiUnreachable) as red:
        contact.check()
    assert str(red.value) == (
        "the API server has not answered for 31 s (window 30 s): "
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )
    api.up = True
    assert contact.try_once()
    assert contact.check()["lastAnswerSecondsAgo"] == 0.0


def test_never_reached_turns_red_one_window_after_the_start() -> None:
    clock, api = Clock(), Api()
    api.up = False
    contact = ApiContact(api.ping, window_s=10, clock=clock)
    contact.try_once()
    assert contact.check()["lastAnswerSecondsAgo"] == 0.0
    clock.now += 11
    with pytest.raises(ApiUnreachable, match="not been reached since the start for 11 s"):
        contact.check()


def test_a_window_must_be_positive() -> None:
    with pytest.raises(ValueError, match="liveness window 0: must be more than 0 seconds"):
        ApiContact(Api().ping, window_s=0)
