"""Who is online: user -> devices connected here (and whether each counts as visible), plus
which other nodes say the user is online through them.

A user is online while at least one device, here or on another node, is connected and not
invisible. `on_change(user)` is called when that flips; `on_local_change(user, online,
last_seen_ms)` when the part this node contributes flips, which is what it tells the other
nodes (Router.presence_changed). Last seen is the moment the last visible device went; the
largest value heard from any node wins, since every node records only its own devices.
"""
from __future__ import annotations

from typing import Callable

from switchboard.core.ids import now_ms
from switchboard.core.lru import LRU
from switchboard.core.remote_users import RemoteUsers

LocalChange = Callable[[str, bool, int], None]
LAST_SEEN_KEPT = 200_000  # users whose last seen is kept here; older ones are asked of the store


class PresenceRegistry:
    def __init__(self, on_change: Callable[[str], None],
                 on_local_change: LocalChange | None = None, last_seen_kept: int = LAST_SEEN_KEPT,
                 remote: RemoteUsers | None = None) -> None:
        """on_local_change: the part this node contributes flipped (None: nobody to tell);
        remote: the users of other nodes, shared with the router's location map (one entry per
        user for both)."""
        # user -> its devices here and whether each counts as visible; one visible device (the
        # common case) is kept as its name alone: a dict per user is ~200 bytes per connection
        self._devices: dict[str, str | dict[str, bool]] = {}
        # user -> the nodes it is online through (in the entry of each user of another node)
        self._remote = remote if remote is not None else RemoteUsers()
        # bounded: one entry per user ever seen going offline would grow for good
        self._last_seen: LRU[str, int] = LRU(last_seen_kept)
        self._on_change = on_change
        self.on_local_change = on_local_change

    # ------------------------------------------------------------------ this node's devices
    def connected(self, user: str, device: str, visible: bool = True) -> None:
        self._set(user, device, visible)

    def set_visible(self, user: str, device: str, visible: bool) -> None:
        """Going invisible is not leaving: last seen stays where it was."""
        if device in self._here(user):
            self._set(user, device, visible, record_last_seen=False)

    def disconnected(self, user: str, device: str) -> None:
        devices = self._here(user)
        if device not in devices:
            return
        was = self._online_here(user), self.is_online(user)
        self._keep(user, {name: v for name, v in devices.items() if name != device})
        self._after(user, was)

    def _set(self, user: str, device: str, visible: bool, record_last_seen: bool = True) -> None:
        was = self._online_here(user), self.is_online(user)
        self._keep(user, {**self._here(user), device: visible})
        self._after(user, was, record_last_seen)

    def _here(self, user: str) -> dict[str, bool]:
        devices = self._devices.get(user)
        if devices is None:
            return {}
        return {devices: True} if isinstance(devices, str) else devices

    def _keep(self, user: str, devices: dict[str, bool]) -> None:
        if not devices:
            self._devices.pop(user, None)
        elif len(devices) == 1 and all(devices.values()):
            self._devices[user] = next(iter(devices))
        else:
            self._devices[user] = devices

    def _after(self, user: str, was: tuple[bool, bool], record_last_seen: bool = True) -> None:
        was_here, was_online = was
        here = self._online_here(user)
        if was_here and not here and record_last_seen:
            self._last_seen.put(user, now_ms())
        if here != was_here and self.on_local_change is not None:
            self.on_local_change(user, here, self._last_seen.get(user, 0))
        if self.is_online(user) != was_online:
            self._on_change(user)

    def _online_here(self, user: str) -> bool:
        devices = self._devices.get(user)
        return isinstance(devices, str) or (devices is not None and any(devices.values()))

    # ------------------------------------------------------------------ other nodes
    def remote(self, node_id: str, user: str, online: bool, last_seen_ms: int) -> None:
        """What `node_id` says about the user's devices there."""
        was_online = self.is_online(user)
        self._remote.set_online(user, node_id, online)
        if last_seen_ms > self._last_seen.get(user, 0):
            self._last_seen.put(user, last_seen_ms)
        if self.is_online(user) != was_online:
            self._on_change(user)

    def forget_node(self, node_id: str) -> None:
        """The node is gone (or sent a fresh snapshot): nobody is online through it any more."""
        for user in self._remote.forget_online(node_id):
            if not self.is_online(user):
                self._on_change(user)

    def local_states(self) -> list[tuple[str, bool, int]]:
        """(user, online here, last seen) for every user with a device here."""
        return [(user, self._online_here(user), self._last_seen.get(user, 0))
                for user in self._devices]

    # ------------------------------------------------------------------ queries
    def is_online(self, user: str) -> bool:
        return self._remote.online_elsewhere(user) or self._online_here(user)

    def last_seen(self, user: str) -> int | None:
        """Known to this process since it started; None means ask the store."""
        return self._last_seen.get(user)

    def online_devices(self, user: str) -> set[str]:
        return set(self._here(user))
