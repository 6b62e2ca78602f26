"""Who is online, for one node: user -> connected devices and whether each counts as visible.

A user is online while at least one connected device is not invisible. `on_change(user)` is
called when that flips; last seen is the moment the last visible device went. Cluster mode keeps
the same facts in Redis Cluster behind the same methods.
"""
from __future__ import annotations

from typing import Callable

from switchboard.core.ids import now_ms


class PresenceRegistry:
    def __init__(self, on_change: Callable[[str], None]) -> None:
        self._devices: dict[str, dict[str, bool]] = {}
        self._last_seen: dict[str, int] = {}
        self._on_change = on_change

    def connected(self, user: str, device: str, visible: bool = True) -> None:
        self._set(user, device, visible)

    def set_visible(self, user: str, device: str, visible: bool) -> None:
        """Going invisible is not leaving: last seen stays where it was."""
        if device in self._devices.get(user, {}):
            self._set(user, device, visible, record_last_seen=False)

    def disconnected(self, user: str, device: str) -> None:
        devices = self._devices.get(user)
        if devices is None or device not in devices:
            return
        was_online = any(devices.values())
        del devices[device]
        if not devices:
            del self._devices[user]
        self._after(user, was_online)

    def _set(self, user: str, device: str, visible: bool, record_last_seen: bool = True) -> None:
        devices = self._devices.setdefault(user, {})
        was_online = any(devices.values())
        devices[device] = visible
        self._after(user, was_online, record_last_seen)

    def _after(self, user: str, was_online: bool, record_last_seen: bool = True) -> None:
        online = self.is_online(user)
        if was_online and not online and record_last_seen:
            self._last_seen[user] = now_ms()
        if online != was_online:
            self._on_change(user)

    def is_online(self, user: str) -> bool:
        return any(self._devices.get(user, {}).values())

    def last_seen(self, user: str) -> int | None:
        """Known to this process since it started; None means ask the store."""
        return self._last_seen.get(user)

    def online_devices(self, user: str) -> set[str]:
        return set(self._devices.get(user, ()))
