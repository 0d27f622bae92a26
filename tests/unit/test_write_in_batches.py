"""kloyst.batches.write_in_batches: the writer loop the sender and the webhook deliverer share."""

from __future__ import annotations

import queue
import threading

from kloyst.batches import STOP, write_in_batches, write_until_done


def test_every_item_queued_before_the_stop_is_written_in_batches_of_at_most_the_size():
    source: queue.SimpleQueue = queue.SimpleQueue()
    for item in range(25):
        source.put(item)
    source.put(STOP)
    for item in range(25, 30):  # queued after the stop marker, before the loop saw it: written too
        source.put(item)
    written: list[list[int]] = []
    write_in_batches(source, written.append, batch_size=10, linger_seconds=0)
    assert [item for batch in written for item in batch] == list(range(30))
    assert max(len(batch) for batch in written) <= 10


def test_a_batch_gathers_what_arrives_within_the_linger_then_is_written():
    source: queue.Queue = queue.Queue()
    written: list[list[str]] = []
    writer = threading.Thread(target=write_in_batches, args=(source, written.append),
                              kwargs={"batch_size": 100, "linger_seconds": 0.5})
    writer.start()
    source.put("a")
    source.put("b")
    source.put(STOP)
    writer.join(timeout=5)
    assert not writer.is_alive()
    assert written == [["a", "b"]]


def test_a_failing_write_is_retried_until_it_succeeds_and_given_up_only_when_stopping(monkeypatch):
    monkeypatch.setattr("kloyst.batches.time.sleep", lambda seconds: None)
    calls: list[int] = []

    def flaky(batch):
        calls.append(len(batch))
        if len(calls) < 3:
            raise OSError("database away")

    assert write_until_done(flaky, [1, 2], stopping=threading.Event(), what="test") is True
    assert calls == [2, 2, 2]

    stopping = threading.Event()
    stopping.set()
    attempts: list[int] = []

    def down(batch):
        attempts.append(1)
        raise OSError("database away")

    assert write_until_done(down, [1], stopping=stopping, what="test") is False
    assert len(attempts) == 5
