"""The harness's waiting helpers: bounded polling and the periodic background thread."""

from __future__ import annotations

import threading

import pytest

from harness.waiting import Periodic, WaitTimeout, wait_until


@pytest.mark.parametrize("fixed_rate", [False, True])
def test_a_periodic_thread_ticks_until_stopped_then_finishes_on_its_own_thread(fixed_rate):
    ticks: list[str] = []
    finished: list[str] = []
    loop = Periodic(lambda: ticks.append(threading.current_thread().name), 0.01,
                    name="ticker", fixed_rate=fixed_rate,
                    finish=lambda: finished.append(threading.current_thread().name))
    loop.start()
    wait_until(lambda: len(ticks) >= 3, 10, "three ticks")
    loop.stop()
    seen = len(ticks)
    assert set(ticks) == {"ticker"} and finished == ["ticker"]
    assert not loop._thread.is_alive() and len(ticks) == seen  # no tick after stop


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_a_periodic_thread_that_fails_still_finishes():
    finished = threading.Event()

    def tick() -> None:
        raise RuntimeError("sampler broke")

    loop = Periodic(tick, 0.01, name="broken", finish=finished.set).start()
    wait_until(finished.is_set, 10, "the finish hook")
    loop.stop()


def test_wait_until_returns_the_condition_value_or_times_out_with_detail():
    assert wait_until(lambda: 42, 1, "a value") == 42
    with pytest.raises(WaitTimeout, match="(?s)never.*why not"):
        wait_until(lambda: None, 0.05, "never", detail=lambda: "why not")


def test_a_stopped_background_load_sends_nothing_more_and_its_thread_ends():
    """A scenario that raises stops its loader: no order placed (retried for a minute here)
    into whatever listens on that port next."""
    import socket

    from harness.load import BackgroundLoad, LoadSpec, place_orders
    with socket.socket() as s:  # a port nothing listens on: every attempt is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = LoadSpec(orders=20, concurrency=2, retry_unavailable_for=60.0, progress=False)
    loader = BackgroundLoad(lambda stop: place_orders(f"http://127.0.0.1:{port}", spec,
                                                      stop=stop)).start()
    loader.stop()
    load = loader.join()
    assert not load["accepted"].any() and len(load) == 20
    # Orders not yet sent when it stopped are marked so, and never sent.
    assert set(load.loc[load["attempts"] == 0, "error"]) <= {"stopped"}
    assert (load["attempts"] <= 2).all()
