"""The explorer's job queue on its own: coalescing, supersedes, busy count, errors, wait."""

from __future__ import annotations

import threading

import pytest

from tessera_explore.widgets.jobs import JobQueue


@pytest.fixture
def events():
    return []


@pytest.fixture
def queue(events):
    q = JobQueue(on_busy=lambda b: events.append(("busy", b)), on_start=lambda t: events.append(("start", t)),
                 on_finish=lambda t: events.append(("finish", t)),
                 on_error=lambda err, t: events.append(("error", t, str(err))))
    yield q
    q.close()


def _blocker(queue):
    """Queue a job that holds the worker until the returned event is set."""
    go = threading.Event()
    queue.submit("block", lambda: go.wait(10), "blocking", quiet=True)
    return go


def test_waiting_jobs_of_one_key_coalesce(queue):
    go = _blocker(queue)
    ran = []
    futures = [queue.submit("k", lambda i=i: ran.append(i) or i, f"job {i}") for i in range(5)]
    go.set()
    queue.wait(10)
    assert ran == [4]  # only the newest ran
    assert all(f.result() == 4 for f in futures)
    assert futures[0] is futures[-1]


def test_supersedes_drops_waiting_jobs(queue):
    go = _blocker(queue)
    ran = []
    old = queue.submit("score", lambda: ran.append("score"), "scoring")
    new = queue.submit("train", lambda: ran.append("train") or "trained", "training", supersedes=("score",))
    go.set()
    queue.wait(10)
    assert ran == ["train"]
    assert old.result() is None
    assert new.result() == "trained"


def test_busy_count_back_to_zero(queue, events):
    go = _blocker(queue)
    queue.submit("a", lambda: 1, "a")
    queue.submit("b", lambda: 2, "b", supersedes=("a",))
    assert queue.busy >= 1
    go.set()
    queue.wait(10)
    assert queue.busy == 0
    busy = [e[1] for e in events if e[0] == "busy"]
    assert busy == [True, False]


def test_quiet_jobs_are_not_reported(queue, events):
    queue.submit("q", lambda: None, "quiet one", quiet=True)
    queue.submit("l", lambda: None, "loud one")
    queue.wait(10)
    titles = [e[1] for e in events if e[0] in ("start", "finish")]
    assert titles == ["loud one", "loud one"]


def test_errors_are_reported_and_raised(queue, events):
    def boom():
        raise ValueError("no good")

    fut = queue.submit("x", boom, "breaking")
    queue.wait(10)
    with pytest.raises(ValueError, match="no good"):
        fut.result()
    assert ("error", "breaking", "no good") in events
    assert queue.busy == 0
    assert queue.submit("y", lambda: "fine", "after").result(10) == "fine"  # the worker lives on


def test_jobs_queued_by_jobs_are_waited_for(queue):
    ran = []
    queue.submit("outer", lambda: queue.submit("inner", lambda: ran.append("inner"), "inner"), "outer")
    queue.wait(10)
    assert ran == ["inner"]


def test_wait_times_out(queue):
    go = _blocker(queue)
    try:
        with pytest.raises(TimeoutError, match="still busy"):
            queue.wait(0.05)
    finally:
        go.set()
    queue.wait(10)
    assert queue.busy == 0
