"""Brokers: where a room's sequence numbers, history, shared state and cross-node fan-out live.

``create_broker`` is the one place that picks the backend.
"""

from __future__ import annotations

from signaling.brokers.base import (
    Broker,
    BrokerUnavailable,
    EventStream,
    GrantRecord,
    LiveRoomInfo,
    Publication,
    PublisherInfo,
    Recovery,
    Registry,
    RoomStore,
    StreamPosition,
    UserInfo,
)
from signaling.brokers.memory import MemoryBroker
from signaling.config import ServerConfig

__all__ = ["Broker", "BrokerUnavailable", "EventStream", "GrantRecord", "LiveRoomInfo", "MemoryBroker",
           "Publication", "PublisherInfo", "Recovery", "Registry", "RoomStore", "StreamPosition", "UserInfo",
           "create_broker"]


def create_broker(config: ServerConfig) -> Broker:
    """The in-process broker by default; Redis when the node is given a URL (several nodes, one room)."""
    if config.redis_url:
        from signaling.brokers.redis import RedisBroker

        return RedisBroker(config.redis_url, history_size=config.room.history_size,
                           history_ttl=config.room.history_ttl)
    return MemoryBroker(history_size=config.room.history_size, history_ttl=config.room.history_ttl)
