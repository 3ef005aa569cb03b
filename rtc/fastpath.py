"""SRTP straight from the socket to the receiver: no queue and no task switch per packet.

aiortc reads every datagram of a connection in one task: aioice puts it on a queue, the DTLS transport's
loop awaits it (through the ICE transport and our handshake repair: five coroutine frames, a future and a
task step), unprotects it and hands it on. For a publisher that is every media packet, ~200 a second a
stream, and the hop costs more than the unprotect. Once the handshake is done, ``deliver_directly`` makes
each SRTP/SRTCP datagram go from aioice's ``data_received`` straight to the transport's handlers, run
eagerly (``run_eagerly``: to their first real suspension, which almost never comes; the rest, if any, in a
task). DTLS datagrams (alerts, a peer's repeated last flight) keep the queue, and so does everything while
the handshake runs or SRTP that came early waits to be handed on.
"""

from __future__ import annotations

import asyncio
import logging
import types
from collections.abc import Coroutine, Generator
from typing import Any

import pylibsrtp
from aiortc import RTCPeerConnection
from aiortc import clock as aiortc_clock
from aiortc.rtp import is_rtcp

log = logging.getLogger(__name__)


def run_eagerly(coro: Coroutine[Any, Any, None], tasks: set[asyncio.Task[None]]) -> bool:
    """Run ``coro`` now, up to its first suspension; True if it finished. If it suspends, a task (held in
    ``tasks`` until done) finishes it."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return True
    except Exception:
        log.exception("a packet handler failed")
        return True
    task = asyncio.ensure_future(_finish(coro, waiting))
    tasks.add(task)
    task.add_done_callback(tasks.discard)
    return False


async def _finish(coro: Coroutine[Any, Any, None], waiting: Any) -> None:
    """Drive a coroutine that suspended on ``waiting`` (a future, or None for a bare yield) to its end."""
    try:
        while True:
            if waiting is None:
                await asyncio.sleep(0)
            else:
                await _wait(waiting)
            waiting = coro.send(None)
    except StopIteration:
        return
    except Exception:
        log.exception("a packet handler failed")


@types.coroutine
def _wait(future: Any) -> Generator[Any, None, None]:
    """Await a future the coroutine yielded (already marked as awaited by it)."""
    if not future.done():
        yield future
    return None


def deliver_directly(pc: RTCPeerConnection) -> None:
    """Once each of ``pc``'s DTLS transports has its SRTP keys, hand its SRTP and SRTCP datagrams from aioice
    straight to the transport's handlers. Call once its transceivers exist (after the answer is set)."""
    for transceiver in pc.getTransceivers():
        dtls: Any = transceiver.receiver.transport
        connection: Any = dtls.transport._connection
        if getattr(connection, "_live_relay_direct", False):
            continue
        connection._live_relay_direct = True
        connection._live_relay_direct_packets = 0  # (how many went the direct way)
        queued = connection.data_received
        tasks: set[asyncio.Task[None]] = set()

        def data_received(data: bytes, component: int, dtls: Any = dtls, queued: Any = queued,
                          connection: Any = connection, tasks: set[asyncio.Task[None]] = tasks) -> None:
            if not data or not 127 < data[0] < 192 or not _direct(dtls):
                queued(data, component)
                return
            connection._live_relay_direct_packets += 1
            dtls._RTCDtlsTransport__rx_bytes += len(data)  # (what the silence watch reads)
            dtls._RTCDtlsTransport__rx_packets += 1
            try:
                if is_rtcp(data):
                    handling = dtls._handle_rtcp_data(dtls._rx_srtp.unprotect_rtcp(data))
                else:
                    arrival_ms = aiortc_clock.current_ms()
                    handling = dtls._handle_rtp_data(dtls._rx_srtp.unprotect(data), arrival_time_ms=arrival_ms)
            except pylibsrtp.Error:
                return  # (as aiortc: a packet that fails authentication is dropped)
            run_eagerly(handling, tasks)

        connection.data_received = data_received


def _direct(dtls: Any) -> bool:
    """Whether a transport's SRTP may skip the queue: keys set, handshake over, nothing early still queued."""
    if dtls._rx_srtp is None or dtls.state != "connected":
        return False
    repair = getattr(dtls.transport, "_live_relay_repair", None)
    if repair is None:
        return True
    if repair._early or repair._handshaking():
        return False
    repair._seen.clear()  # (as the repair does at the peer's first SRTP: no handshake datagram will come again)
    return True
