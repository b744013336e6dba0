"""The background worker: order, back-pressure, errors handed back, join."""

import threading
import time

import pytest

from keras_cam.training.background import BackgroundJobs


def test_jobs_run_in_order_on_another_thread_and_join_waits_for_all():
    jobs, seen = BackgroundJobs(capacity=2), []

    def job(i):
        time.sleep(0.01)
        seen.append((i, threading.current_thread().name))

    for i in range(6):
        jobs.submit(lambda i=i: job(i), f"job {i}")
    jobs.join()
    assert [i for i, _ in seen] == list(range(6))
    assert {name for _, name in seen} == {"keras_cam-writer"}
    assert jobs.outcomes() == [(f"job {i}", None) for i in range(6)]
    assert jobs.outcomes() == []  # each outcome is handed back once


def test_a_full_queue_makes_the_submitter_wait():
    jobs, release, started = BackgroundJobs(capacity=2), threading.Event(), threading.Event()
    jobs.submit(lambda: (started.set(), release.wait()), "running")
    assert started.wait(timeout=60)  # the worker has taken the first job and blocks in it
    for i in range(2):
        jobs.submit(lambda: None, f"queued {i}")
    blocked = threading.Thread(target=jobs.submit, args=(lambda: None, "waits"))
    blocked.start()
    blocked.join(timeout=0.3)
    assert blocked.is_alive()  # back-pressure: no unbounded queue
    release.set()
    blocked.join(timeout=60)
    assert not blocked.is_alive()
    jobs.join()
    assert [label for label, _ in jobs.outcomes()] == ["running", "queued 0", "queued 1", "waits"]


def test_an_error_is_handed_back_and_later_jobs_still_run():
    jobs = BackgroundJobs()

    def fail():
        raise OSError("disk full")

    jobs.submit(fail, "first")
    jobs.submit(lambda: None, "second")
    jobs.join()
    (first, error), second = jobs.outcomes()
    assert first == "first"
    assert isinstance(error, OSError)
    assert "disk full" in str(error)
    assert second == ("second", None)
    jobs.submit(lambda: None, "after a join")  # a new thread starts on demand
    jobs.join()
    assert jobs.outcomes() == [("after a join", None)]


@pytest.mark.parametrize("capacity", [1, 3])
def test_join_without_jobs_returns(capacity):
    BackgroundJobs(capacity).join()
