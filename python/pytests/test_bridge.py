"""One context across Python and Rust, through the real extension module.

Each test states what Python's own contextvars and asyncio do for the same
program, and checks that the crossing into Rust and back keeps it.
"""

import asyncio
import contextvars
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import contextvars_demo as demo
from contextvars_demo import request_id

tenant = contextvars.ContextVar("tenant")
demo.mirror_tenant(tenant)


def seen_by_callback(kind):
    return (kind, request_id.get(None), threading.get_ident())


async def one_request(n):
    request_id.set(n)
    await asyncio.sleep(0)  # let the other tasks interleave
    seen = await demo.fan_out_async(seen_by_callback)
    return n, seen


async def test_hundred_tasks_each_see_their_own_id_in_every_callback():
    results = await asyncio.gather(*(asyncio.create_task(one_request(n)) for n in range(1, 101)))
    main_thread = threading.get_ident()
    for n, seen in results:
        assert sorted(kind for kind, _, _ in seen) == ["rayon", "thread", "tokio"]
        for kind, rust_value, (cb_kind, py_value, thread) in seen:
            assert cb_kind == kind
            assert rust_value == n, (kind, rust_value, n)
            assert py_value == n, (kind, py_value, n)
            # The callback really ran on a Rust thread, not the event loop's.
            assert thread != main_thread


async def test_coroutine_awaited_from_a_rust_task_runs_in_the_awaiting_tasks_context():
    async def coroutine():
        await asyncio.sleep(0)
        return request_id.get(None), asyncio.current_task() is not None

    async def one(n):
        request_id.set(n)
        return n, await demo.await_from_rust(coroutine)

    for n, (rust_value, (py_value, in_task)) in await asyncio.gather(*(one(n) for n in range(1, 21))):
        assert (rust_value, py_value, in_task) == (n, n, True)


async def test_a_thread_started_from_a_task_compared_with_pure_python():
    request_id.set(7)
    seen = {}

    # Pure Python: a new thread starts in an empty context ...
    t = threading.Thread(target=lambda: seen.setdefault("threading", request_id.get(None)))
    t.start()
    t.join()
    # ... asyncio.to_thread copies the task's context ...
    seen["to_thread"] = await asyncio.to_thread(lambda: request_id.get(None))
    # ... and a Rust thread spawned through the bridge behaves as to_thread.
    seen["rust thread"] = dict((k, v) for k, v, _ in await demo.fan_out_async(seen_by_callback))["thread"]

    assert seen == {"threading": None, "to_thread": 7, "rust thread": 7}


async def test_a_task_created_from_a_callback_compared_with_pure_python():
    loop = asyncio.get_running_loop()
    request_id.set(11)

    async def read():
        return request_id.get(None)

    def create_task_from_callback(_kind=None):
        return asyncio.run_coroutine_threadsafe(read(), loop).result(timeout=10)

    # Pure Python: a callback on a plain thread schedules a task, which
    # copies that thread's (empty) context.
    plain = await asyncio.to_thread(
        contextvars.Context().run, create_task_from_callback
    )
    # The same callback made from Rust threads runs in the caller's context,
    # and so does the task it creates.
    from_rust = {k: v for k, _, v in await demo.fan_out_async(create_task_from_callback)}

    assert plain is None
    assert from_rust == {"tokio": 11, "thread": 11, "rayon": 11}


async def test_a_rust_future_that_fails_or_panics_raises_in_the_awaiting_task():
    with pytest.raises(ValueError, match="no such request"):
        await demo.failing_future("no such request", False)
    with pytest.raises(Exception, match="rust future panicked: exploded") as info:
        await demo.failing_future("exploded", True)
    assert type(info.value).__name__ == "RustPanic"


async def test_cancelling_the_awaitable_drops_the_rust_future():
    before = demo.pending_dropped()
    task = asyncio.ensure_future(demo.pending_forever())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if demo.pending_dropped() > before:
            break
        await asyncio.sleep(0.005)
    assert demo.pending_dropped() == before + 1


def test_rust_reads_what_python_set_and_defaults_stay_per_side():
    ctx = contextvars.Context()
    assert ctx.run(demo.rust_request_id) is None
    assert ctx.run(lambda: (request_id.set(3), demo.rust_request_id())[1]) == 3
    assert ctx.run(lambda: (tenant.set("acme"), demo.rust_tenant())[1]) == "acme"


def test_rust_set_is_seen_by_the_callback_and_not_by_the_caller():
    def inner():
        request_id.set(5)
        return demo.set_then_call(9, lambda: request_id.get())

    ctx = contextvars.Context()
    assert ctx.run(inner) == 9
    # The Rust function ran in a copy of the caller's context.
    assert ctx[request_id] == 5


def test_callback_changes_are_seen_by_rust_and_by_the_next_callback():
    stored = []

    def first():
        request_id.set(21)
        stored.append(tenant.set("first"))

    def second():
        # The token of the first callback resets in the same context: the
        # calls are inline calls from one Rust context.
        tenant.reset(stored.pop())
        return None

    ctx = contextvars.Context()
    assert ctx.run(demo.call_each, [first, lambda: tenant.get(None), second]) == [21, 21, 21]
    assert ctx.run(demo.rust_request_id) is None


def test_a_copy_made_in_rust_does_not_share_the_callbacks_writes():
    ctx = contextvars.Context()
    ctx.run(request_id.set, 1)
    assert ctx.run(demo.call_in_copy, lambda: (request_id.set(2), request_id.get())[1]) == 2
    assert ctx.run(demo.rust_request_id) == 1


def test_callback_that_raises_comes_back_to_rust_as_that_error():
    def boom():
        raise ValueError(f"no such request {request_id.get(None)}")

    request_id.set(404)
    assert demo.error_seen_by_rust(boom) == ("ValueError", "no such request 404")


def test_rust_panic_in_a_call_from_python_is_a_python_exception():
    ctx = contextvars.Context()
    ctx.run(request_id.set, 1)
    with pytest.raises(BaseException, match="exploded") as info:
        ctx.run(demo.panic_inside, "exploded")
    assert type(info.value).__name__ == "PanicException"
    # Nothing is left entered, and the caller's value is intact.
    assert ctx.run(demo.rust_request_id) == 1
    assert ctx[request_id] == 1


def test_value_that_does_not_convert_names_the_variable():
    ctx = contextvars.Context()
    ctx.run(request_id.set, "not a number")
    with pytest.raises(TypeError, match=r"mirrored variable `request_id`.*`str`.*`u64`"):
        ctx.run(demo.rust_request_id)


def test_callers_token_reset_in_a_callback_is_refused_as_python_refuses_it():
    token = request_id.set(8)

    def reset_callers_token():
        request_id.reset(token)

    # Pure Python, the same program on a copy of the context:
    with pytest.raises(ValueError, match="different Context"):
        contextvars.copy_context().run(reset_callers_token)
    # Through Rust: the same error, seen by Rust as a ValueError.
    name, message = demo.error_seen_by_rust(reset_callers_token)
    assert name == "ValueError" and "different Context" in message
    request_id.reset(token)


def test_mirroring_errors_name_the_variable():
    with pytest.raises(TypeError, match=r"`tenant` can only mirror a contextvars.ContextVar, not a `str`"):
        demo.mirror_tenant("tenant")
    with pytest.raises(ValueError, match=r"`tenant` already mirrors"):
        demo.mirror_tenant(contextvars.ContextVar("tenant2"))
    with pytest.raises(ValueError, match=r"`request_id` is already mirrored by the Rust variable `request_id`"):
        demo.mirror_tenant(request_id)


def test_interpreter_shutdown_while_rust_threads_call_back_does_not_abort():
    script = textwrap.dedent(
        """
        import time
        import contextvars_demo as demo
        calls = []
        def callback():
            calls.append(demo.request_id.get())
            time.sleep(0.0005)  # gives the GIL up inside the callback
            sum(range(2000))
        demo.request_id.set(3)
        demo.call_back_forever(callback, 4)
        while len(calls) < 100:
            time.sleep(0.001)
        assert set(calls) == {3}, set(calls)
        print("exiting with Rust threads calling back", flush=True)
        """
    )
    # Without the bridge's shutdown hook most of these runs abort (a thread
    # that takes the GIL back during finalization is ended by CPython).
    for _ in range(5):
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (done.returncode, done.stderr)
        assert "exiting with Rust threads calling back" in done.stdout
        assert "Fatal" not in done.stderr and "panicked" not in done.stderr, done.stderr


def test_readme_example_runs():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Python and Rust, one context", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert blocks, "the README section has a Python example"
    for block in blocks:
        # Several runs: the program exits while Rust threads that handed
        # back its results may still be inside the interpreter.
        for _ in range(5):
            done = subprocess.run([sys.executable, "-c", block], capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, (done.returncode, done.stderr)
