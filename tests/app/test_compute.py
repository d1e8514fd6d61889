"""app/compute.py: work runs on the one model thread, in order; errors and early closes reach the right side."""

import threading

import pytest

from app import compute


def test_calls_run_on_the_model_thread_and_return_or_raise():
    assert compute.call(lambda: threading.current_thread().name).startswith(compute.THREAD_NAME)
    assert compute.call(compute.call, lambda: 2 + 2) == 4  # from the model thread itself: at once
    with pytest.raises(ZeroDivisionError):
        compute.call(lambda: 1 / 0)


def test_iterate_hands_over_items_computed_on_the_model_thread_and_their_error():
    def items():
        for i in range(3):
            yield i, threading.current_thread().name
        raise RuntimeError("the model failed")

    got = []
    with pytest.raises(RuntimeError, match="the model failed"):
        for item in compute.iterate(items):
            got.append(item)
    assert [i for i, _ in got] == [0, 1, 2]
    assert all(name.startswith(compute.THREAD_NAME) for _, name in got)


def test_closing_early_stops_the_producer_and_waits_until_it_is_closed():
    produced, closed = [], threading.Event()

    def tokens():
        try:
            for i in range(1000):
                produced.append(i)
                yield i
                threading.Event().wait(0.1)  # a token takes a while
        finally:
            closed.set()

    reader = compute.iterate(tokens)
    assert next(reader) == 0
    reader.close()
    assert closed.is_set()  # closed on the model thread before close() returned
    assert len(produced) <= 2  # the item under way when the reader left, no more
    assert compute.call(lambda: "free") == "free"  # and the model thread is free again


def test_work_queued_behind_busy_work_waits_its_turn():
    busy, order = threading.Event(), []
    compute.submit(lambda: (busy.wait(5), order.append("first")))
    later = compute.submit(order.append, "second")
    assert not later.done()
    busy.set()
    later.result(5)
    assert order == ["first", "second"]
