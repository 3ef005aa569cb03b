"""One UDP port for every peer connection of a node (as mediasoup's WebRtcServer and LiveKit's UDP mux).

aioice opens a socket per ICE component; an operator would have to open every UDP port of the machine.
``UdpMux`` binds one socket per local address, all on the same port, and demultiplexes what arrives:

- a datagram from a remote address the mux already knows goes to that address's session, and only there;
- from an unknown address, only a STUN Binding request is looked at: its USERNAME names the session
  (``<our ufrag>:<their ufrag>``), its MESSAGE-INTEGRITY must check with that session's password, and then
  the address is the session's from now on (a client's later DTLS, SRTP and SRTCP follow it);
- anything else (garbage, STUN for nobody, a request that fails its integrity check) is dropped and counted
  (``MuxStats``), and never reaches a session.

A session is one aioice ``Connection``: its host candidates are this mux's addresses and port, and its
"protocol" (``MuxedProtocol``, an aioice ``StunProtocol`` whose transport is the shared socket) sends from the
shared socket. The server stays a full ICE agent (aioice is one): its own checks open the way through a
client's NAT, and nothing in aioice's state machine changes. ``attach`` is the only hook, and it lives here
with the rest of what this module knows of aioice's private names (``_protocols``, ``_local_candidates``,
``gather_candidates``); ``tests/test_udpmux.py`` exercises it on its own.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aioice import Candidate, stun
from aioice.candidate import candidate_foundation, candidate_priority
from aioice.ice import StunProtocol, get_host_addresses

log = logging.getLogger(__name__)

RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024  # one socket for every viewer: a burst of them must not overflow
MAX_ADDRESSES_PER_SESSION = 8  # remote addresses one session may learn (a client's host, srflx, relay...)


def interface_addresses() -> list[str]:
    """This host's addresses as aioice would gather on them (every interface but loopback)."""
    return list(get_host_addresses(use_ipv4=True, use_ipv6=False))


@dataclass(slots=True)
class MuxStats:
    """What the shared port dropped, by reason, and what it carried."""

    datagrams: int = 0
    unknown_address: int = 0  # not STUN, from an address no session knows
    unknown_username: int = 0  # a Binding request for a session that does not exist (or is gone)
    bad_integrity: int = 0  # a Binding request whose MESSAGE-INTEGRITY does not check
    not_a_request: int = 0  # other STUN from an unknown address
    sessions: int = 0  # sessions attached now


def nominate_on_use_candidate(connection: Any) -> None:
    """As the controlled agent, take the client's authenticated USE-CANDIDATE check as the nomination
    at once, as an ICE-lite server would, instead of also waiting for our own check on that pair to
    succeed: our check (and its answer) can be lost, and its retransmissions double (250, 500, 1000 ms)
    while the client is already sending. The client's check came from that address with our password, and
    it sends nothing before our answer reaches it."""
    from aioice.ice import CandidatePair

    incoming = connection.check_incoming

    def check_incoming(message: Any, addr: tuple[str, int], protocol: Any) -> None:
        incoming(message, addr, protocol)
        if connection.ice_controlling or "USE-CANDIDATE" not in message.attributes:
            return
        pair = next((p for p in connection._check_list if p.protocol is protocol
                     and (p.remote_candidate.host, p.remote_candidate.port) == addr), None)
        if pair is None or pair.nominated or pair.state == CandidatePair.State.SUCCEEDED:
            return
        if pair.task is not None:
            pair.task.cancel()  # our own check of it is not needed any more
        connection.check_state(pair, CandidatePair.State.SUCCEEDED)
        pair.nominated = True
        connection.check_complete(pair)

    connection.check_incoming = check_incoming


def _set_buffers(sock: socket.socket, size: int) -> None:
    """Both kernel buffers of the shared socket at ``size``: past net.core.[rw]mem_max when allowed (root:
    SO_*BUFFORCE), since every session's packets queue in them together; else as large as the system lets."""
    for force, plain in ((getattr(socket, "SO_RCVBUFFORCE", None), socket.SO_RCVBUF),
                         (getattr(socket, "SO_SNDBUFFORCE", None), socket.SO_SNDBUF)):
        try:
            if force is None:
                raise PermissionError
            sock.setsockopt(socket.SOL_SOCKET, force, size)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, size)


MEDIA_SINK = "_live_relay_media_sink"


def set_media_sink(connection: Any, sink: Callable[[bytes], bool] | None) -> None:
    """Offer each non-STUN datagram that reaches aioice ``connection`` through the mux to ``sink`` first,
    synchronously, as it arrives; what the sink takes (returns True for) never enters aioice's queue
    (``rtc.adapter.receive_synchronously``: a publisher's SRTP, without a task switch per packet)."""
    setattr(connection, MEDIA_SINK, sink)


class MuxedProtocol(StunProtocol):
    """An aioice protocol whose socket is the mux's: closing it leaves the shared socket open."""

    def __init__(self, receiver: Any, mux: UdpMux, transport: asyncio.DatagramTransport,
                 local_candidate: Candidate) -> None:
        super().__init__(receiver)
        self.mux = mux
        self.transport = transport
        self.local_candidate = local_candidate

    async def close(self) -> None:
        self.mux._forget(self)
        self.connection_lost(None)

    def datagram_received(self, data: bytes | str, addr: tuple[Any, ...]) -> None:
        # RFC 7983: a first byte over 3 is not STUN (DTLS 20-63, SRTP/SRTCP 128-191). aioice tries to parse
        # every datagram as STUN and takes the exception as "media": for each media packet, a parse and a
        # raised ValueError saved.
        if isinstance(data, bytes) and data and data[0] > 3:
            sink = getattr(self.receiver, MEDIA_SINK, None)
            if sink is None or not sink(data):
                self.receiver.data_received(data, self.local_candidate.component)
            return
        super().datagram_received(data, addr)

    def send_stun(self, message: stun.Message, addr: tuple[str, int]) -> None:
        if message.message_class == stun.Class.REQUEST:
            self.mux.learn_sent(self, addr)  # its answer comes back from there
        super().send_stun(message, addr)

    def __repr__(self) -> str:
        return f"muxed({self.id})"


class _StunSender:
    """What an aioice ``stun.Transaction`` sends through: one of the mux's sockets."""

    def __init__(self, transport: asyncio.DatagramTransport) -> None:
        self.transport = transport

    def send_stun(self, message: stun.Message, addr: tuple[str, int]) -> None:
        self.transport.sendto(bytes(message), addr)


class _Socket(asyncio.DatagramProtocol):
    """One bound address of the mux."""

    def __init__(self, mux: UdpMux) -> None:
        self.mux = mux
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self.mux._received(self, data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        log.debug("udp mux socket error", extra={"error": repr(exc)})


class UdpMux:
    """``await UdpMux.open(addresses, port)``; ``attach(connection)`` per aioice connection before it
    gathers; ``close()`` at shutdown. ``port`` 0 lets the system choose (then every address gets the
    port the first one got)."""

    def __init__(self) -> None:
        self.port = 0
        self.addresses: list[str] = []  # local addresses bound
        self.announced: dict[str, str] = {}  # local address -> the address candidates name (public, 1:1 NAT)
        self.stats = MuxStats()
        self._sockets: list[_Socket] = []
        self._by_ufrag: dict[str, tuple[Any, dict[int, MuxedProtocol]]] = {}  # ufrag -> (connection, by socket)
        self._by_address: dict[tuple[_Socket, tuple[str, int]], MuxedProtocol] = {}
        self._addresses_of: dict[MuxedProtocol, set[tuple[_Socket, tuple[str, int]]]] = {}
        # Our own Binding requests to a STUN server (discover), by transaction id.
        self._discovering: dict[bytes, stun.Transaction] = {}

    @classmethod
    async def open(cls, addresses: list[str], port: int, announce: dict[str, str] | None = None) -> UdpMux:
        """Bind ``port`` on every address. Raises OSError (port in use, no such address)."""
        mux = cls()
        loop = asyncio.get_running_loop()
        try:
            for address in addresses:
                sock = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, socket.SOCK_DGRAM)
                _set_buffers(sock, RECEIVE_BUFFER_BYTES)
                sock.bind((address, mux.port or port))
                mux.port = sock.getsockname()[1]
                _, protocol = await loop.create_datagram_endpoint(lambda: _Socket(mux), sock=sock)
                mux._sockets.append(protocol)
                mux.addresses.append(address)
        except OSError:
            mux.close()
            raise
        mux.announced = {a: (announce or {}).get(a, a) for a in mux.addresses}
        return mux

    async def discover(self, server: tuple[str, int], timeout: float = 3.0) -> dict[str, str]:
        """Ask a STUN server (RFC 8489 Binding) from each bound address which address it sees us from: a
        node behind 1:1 NAT (a cloud VM) learns its public address this way. Returns local -> public for
        the addresses that got an answer (IPv4 server: IPv4 addresses only). aioice's transaction retransmits
        on its schedule; an address with no answer in ``timeout`` seconds is left out."""
        loop = asyncio.get_running_loop()
        found: dict[str, str] = {}
        try:
            resolved = await loop.getaddrinfo(server[0], server[1], type=socket.SOCK_DGRAM)
        except OSError as exc:
            log.warning("STUN server not found", extra={"server": server[0], "error": str(exc)})
            return found
        server = (str(resolved[0][4][0]), int(resolved[0][4][1]))
        for sock, address in zip(self._sockets, self.addresses, strict=True):
            if (":" in address) != (":" in server[0]) or sock.transport is None:
                continue
            request = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
            transaction = stun.Transaction(request, server, _StunSender(sock.transport))  # aioice's retransmissions
            self._discovering[request.transaction_id] = transaction
            try:
                async with asyncio.timeout(timeout):
                    response, _ = await transaction.run()
                mapped = response.attributes.get("XOR-MAPPED-ADDRESS")
                if mapped is not None:
                    found[address] = str(mapped[0])
            except (TimeoutError, stun.TransactionError):
                log.warning("no answer from the STUN server", extra={"server": f"{server[0]}:{server[1]}",
                                                                    "address": address})
            finally:
                self._discovering.pop(request.transaction_id, None)
        return found

    def close(self) -> None:
        for sock in self._sockets:
            if sock.transport is not None:
                sock.transport.close()
        self._sockets.clear()

    # -- sessions ----------------------------------------------------------------------------------------

    def attach(self, connection: Any) -> None:
        """Make an aioice ``Connection`` gather its host candidates on this mux (instead of a socket of
        its own per address). Call before it gathers (before setLocalDescription)."""
        mux = self

        async def gather() -> None:
            if connection._local_candidates_start:
                return
            connection._local_candidates_start = True
            for component in connection._components:
                connection._local_candidates += mux._register(connection, component)
            connection._local_candidates_end = True

        connection.gather_candidates = gather
        nominate_on_use_candidate(connection)

    def _register(self, connection: Any, component: int) -> list[Candidate]:
        candidates = []
        protocols: dict[int, MuxedProtocol] = {}
        for sock, address in zip(self._sockets, self.addresses, strict=True):
            assert sock.transport is not None
            host = self.announced[address]
            candidate = Candidate(foundation=candidate_foundation("host", "udp", host), component=component,
                                  transport="udp", priority=candidate_priority(component, "host"),
                                  host=host, port=self.port, type="host")
            protocol = MuxedProtocol(connection, self, sock.transport, candidate)
            protocols[id(sock)] = protocol
            self._addresses_of[protocol] = set()
            candidates.append(candidate)
        connection._protocols += list(protocols.values())
        self._by_ufrag[connection.local_username] = (connection, protocols)
        self.stats.sessions = len(self._by_ufrag)
        return candidates

    def _forget(self, protocol: MuxedProtocol) -> None:
        for key in self._addresses_of.pop(protocol, set()):
            if self._by_address.get(key) is protocol:
                del self._by_address[key]
        ufrag = protocol.receiver.local_username
        entry = self._by_ufrag.get(ufrag)
        if entry is not None and all(p not in self._addresses_of for p in entry[1].values()):
            del self._by_ufrag[ufrag]
        self.stats.sessions = len(self._by_ufrag)

    # -- datagrams ---------------------------------------------------------------------------------------

    def _received(self, sock: _Socket, data: bytes, addr: tuple[str, int]) -> None:
        self.stats.datagrams += 1
        protocol = self._by_address.get((sock, addr))
        # A Binding request always names its session: it is checked, so an address claimed by the checks
        # one session sent (to candidates its client named) is taken back by the client that owns it.
        if protocol is None or (data[:1] in (b"\x00", b"\x01") and not self._names(protocol, data)):
            protocol = self._first_contact(sock, data, addr)
            if protocol is None:
                return
        protocol.datagram_received(data, addr)

    @staticmethod
    def _names(protocol: MuxedProtocol, data: bytes) -> bool:
        """Whether ``data``, if a Binding request, is for ``protocol``'s session (other STUN: yes)."""
        if len(data) < 20 or data[:2] != b"\x00\x01":
            return True
        try:
            username = stun.parse_message(data).attributes.get("USERNAME")
        except ValueError:
            return True
        return not isinstance(username, str) or username.split(":", 1)[0] == protocol.receiver.local_username

    def _first_contact(self, sock: _Socket, data: bytes, addr: tuple[str, int]) -> MuxedProtocol | None:
        """The session an unknown address's datagram opens, or None (dropped and counted)."""
        if len(data) < 20 or data[0] > 3:  # RFC 7983: a STUN message starts with 0-3
            self.stats.unknown_address += 1
            return None
        try:
            message = stun.parse_message(data)
        except ValueError:
            self.stats.unknown_address += 1
            return None
        waiting = self._discovering.get(message.transaction_id)
        if waiting is not None:
            waiting.response_received(message, addr)  # the STUN server's answer to discover()
            return None
        if message.message_method != stun.Method.BINDING or message.message_class != stun.Class.REQUEST:
            self.stats.not_a_request += 1
            return None
        username = message.attributes.get("USERNAME")
        entry = self._by_ufrag.get(username.split(":", 1)[0]) if isinstance(username, str) else None
        if entry is None:
            self.stats.unknown_username += 1
            return None
        connection, protocols = entry
        if not message.check_message_integrity(connection.local_password.encode("utf8")):
            self.stats.bad_integrity += 1
            return None
        protocol = protocols.get(id(sock))
        if protocol is None or len(self._addresses_of.get(protocol, ())) >= MAX_ADDRESSES_PER_SESSION:
            self.stats.unknown_username += 1
            return None
        self._learn(protocol, sock, addr)
        return protocol

    def _learn(self, protocol: MuxedProtocol, sock: _Socket, addr: tuple[str, int]) -> None:
        key = (sock, addr)
        old = self._by_address.get(key)
        if old is not None and old is not protocol:
            self._addresses_of.get(old, set()).discard(key)
        self._by_address[key] = protocol
        self._addresses_of.setdefault(protocol, set()).add(key)

    def learn_sent(self, protocol: MuxedProtocol, addr: tuple[str, int]) -> None:
        """Our own check went to ``addr``: its answer comes back from there (claimed only if unclaimed)."""
        sock = next((s for s in self._sockets if s.transport is protocol.transport), None)
        if sock is not None and (sock, addr) not in self._by_address and \
                len(self._addresses_of.get(protocol, ())) < MAX_ADDRESSES_PER_SESSION:
            self._learn(protocol, sock, addr)
