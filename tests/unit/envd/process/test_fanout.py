"""The output fan-out: order, re-attach semantics, back-pressure signals, end delivery."""

from __future__ import annotations

from hutch.envd.process.fanout import OutputFanout
from hutch.envd.process.models import Output, OutputStream, ProcessEnd

END = ProcessEnd(exit_code=0, exited=True, status="exit status 0")


def chunk(i: int) -> Output:
    return Output(OutputStream.STDOUT, str(i).encode())


async def test_fanout_delivers_in_order_then_end() -> None:
    fanout = OutputFanout(on_room=lambda: None)
    a, b = fanout.subscribe(), fanout.subscribe()
    for i in range(3):
        fanout.publish(chunk(i))
    fanout.finish(END)
    for sub in (a, b):
        assert [await sub.next() for _ in range(4)] == [chunk(0), chunk(1), chunk(2), END]
        assert await sub.next() == END  # the end stays the answer


async def test_fanout_drops_output_nobody_is_attached_to() -> None:
    fanout = OutputFanout(on_room=lambda: None)
    fanout.publish(chunk(0))
    late = fanout.subscribe()
    fanout.publish(chunk(1))
    assert await late.next() == chunk(1)


async def test_fanout_subscribe_after_finish_gets_the_end_at_once() -> None:
    fanout = OutputFanout(on_room=lambda: None)
    fanout.finish(END)
    assert await fanout.subscribe().next() == END


async def test_fanout_next_times_out_with_none() -> None:
    fanout = OutputFanout(on_room=lambda: None)
    assert await fanout.subscribe().next(timeout=0) is None


async def test_fanout_reports_congestion_and_room() -> None:
    rooms: list[int] = []
    fanout = OutputFanout(on_room=lambda: rooms.append(1), capacity=2)
    fast, slow = fanout.subscribe(), fanout.subscribe()
    fanout.publish(chunk(0))
    assert not fanout.congested
    fanout.publish(chunk(1))
    assert fanout.congested
    await fast.next()
    await fast.next()
    assert fanout.congested and rooms == []  # the slow one still holds the producer back
    await slow.next()
    assert not fanout.congested and rooms == [1]


async def test_fanout_closing_a_full_subscriber_releases_the_producer() -> None:
    rooms: list[int] = []
    fanout = OutputFanout(on_room=lambda: rooms.append(1), capacity=1)
    sub = fanout.subscribe()
    fanout.publish(chunk(0))
    assert fanout.congested
    sub.close()
    assert not fanout.congested and rooms == [1]
    assert sub.closed and await sub.next() is None
    assert fanout.subscriber_count == 0
