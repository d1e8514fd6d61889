"""The one thread that runs the model (and every other torch computation) in `astrovlm serve` and `chat`.

    backend = compute.call(LocalBackend.load)                   # load on the model thread
    for event in compute.iterate(lambda: assistant.respond(history)): ...   # computed there, read here

torch's CPU kernels run on OpenMP (libgomp), which gives every thread that starts parallel work a team of
its own. Once a process holds more OpenMP threads than it has CPUs, libgomp stops idle team members from
spinning between parallel regions and puts them to sleep, and waking them is paid by each of the ~200
small matmuls of a decode step: on 2 cores, `astrovlm serve` answered from request threads at ~20
tokens/s where the main thread decodes at 28 (benchmarks/perf/serve.py). So the servers load the model
and run all their torch work on this single thread, which also keeps replies one at a time; request
threads only wait and pass results along.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

THREAD_NAME = "astrovlm-model"
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=THREAD_NAME)


def on_model_thread() -> bool:
    return threading.current_thread().name.startswith(THREAD_NAME)


def submit(fn: Callable, /, *args, **kwargs) -> Future:
    """fn(*args, **kwargs) queued on the model thread, after what is already queued."""
    return _executor.submit(fn, *args, **kwargs)


def call(fn: Callable, /, *args, **kwargs):
    """fn(*args, **kwargs) on the model thread (at once when already there): its result or its error."""
    if on_model_thread():
        return fn(*args, **kwargs)
    return submit(fn, *args, **kwargs).result()


_ITEM, _ERROR, _END = range(3)


def iterate(make: Callable[[], Iterator]) -> Iterator:
    """The items of the iterator make() returns, computed on the model thread and handed over as they
    come; its error is raised here. Closing this generator stops that iterator after its current item,
    closes it there and returns once it is closed (so what it was changing is finished)."""
    if on_model_thread():
        yield from make()
        return
    items: queue.Queue = queue.Queue()
    stop = threading.Event()

    def produce() -> None:
        try:
            iterator = make()
            try:
                for item in iterator:
                    items.put((_ITEM, item))
                    if stop.is_set():
                        return
            finally:
                getattr(iterator, "close", lambda: None)()
        except BaseException as error:  # handed to the reader, who raises it
            items.put((_ERROR, error))
        else:
            items.put((_END, None))

    done = submit(produce)
    try:
        while True:
            kind, value = items.get()
            if kind == _END:
                return
            if kind == _ERROR:
                raise value
            yield value
    finally:
        stop.set()
        done.result()
