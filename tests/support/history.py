"""A Jepsen-style history of a messaging test, and the checker of the invariants of docs/guarantees.md.

Record while the test runs, check once it healed:

* every send attempt: `invoke()` when it starts, then exactly one of `ok(seq)` (SendAck),
  `fail(error)` (a definite refusal such as NOT_MEMBER: the message must not exist) or
  `info(error)` (timeout, lost connection: the outcome is unknown, zero or one copies);
* every device's app-visible stream (what `Client.messages()` yields), in arrival order:
  `received()`;
* which users are members of which chats since the start (`member()`), and the devices that
  take part (`device()`);
* after healing and a final sync, each device's view of the heads (`final()`), and optionally
  the store's rows (`stored()`): the store is the authority on what exists;
* faults as they are injected (`fault()`), so a counter-example names what was going on.

`check()` returns a list of human-readable violations (empty: the history is fine):

* I1 lost: an acknowledged message missing from the final log of a member device (its sender
  device excepted: the SendAck is its copy) or from the store;
* I4 seq reuse: one (chat, seq) seen with two different contents anywhere;
* I2 duplicate delivery: one (chat, seq) twice in one device's stream;
* I2 duplicate message: one (chat, sender, client_msg_id) stored under two seqs, whatever the
  send's outcome (an unknown send may exist, but at most once);
* I3 order: a device's stream of a chat going back (a lower seq not seen before);
* I3 gap: a device's final log of a chat it was a member of since the start is not 1..head
  (its own sends count as held: the SDK never shows a device its own messages);
* store gap: the store's seqs of a chat are not 1..head;
* phantom: a message that nobody sent (no send attempt with that sender and client_msg_id), or
  one whose send was refused definitely. Membership events are entries of the log that the
  server writes (no send attempt): they count for seqs, order and gaps like any message, and
  are exempt from this one.

`Recorder` is the asyncio side: it drains clients' message iterators into the history and
wraps `Client.send` so every attempt is recorded with its outcome.
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

__all__ = ["History", "Recorder", "SendRecord", "Observed"]

Device = tuple[str, str]          # (user, device)
Content = tuple[str, str, str, bytes]  # (sender user, sender device, client_msg_id, body)


@dataclass(slots=True)
class SendRecord:
    chat: str
    user: str
    device: str
    client_msg_id: str
    body: bytes
    t_invoke: float
    outcome: str = "pending"   # ok | fail | info | pending (never completed: counts as info)
    seq: int = 0
    error: str = ""
    t_complete: float = 0.0

    def describe(self) -> str:
        what = f"seq {self.seq}" if self.outcome == "ok" else self.error or self.outcome
        return (f"send {self.user}/{self.device} {self.chat} {self.client_msg_id!r} "
                f"body={self.body[:40]!r} -> {self.outcome} ({what}) at t={self.t_invoke:.2f}s")


@dataclass(slots=True, frozen=True)
class Observed:
    """One message as seen somewhere: a device's stream, the store, or a SendAck."""
    chat: str
    seq: int
    sender_user: str
    sender_device: str
    client_msg_id: str
    body: bytes
    t: float = field(default=0.0, compare=False)
    membership: bool = False  # a membership event (written by the server, not sent)

    @property
    def content(self) -> Content:
        return (self.sender_user, self.sender_device, self.client_msg_id, self.body)

    @classmethod
    def of(cls, message, t: float = 0.0) -> "Observed":
        """From a protobuf Message (or anything with the same attributes)."""
        return cls(message.chat_id, message.seq, message.sender_user_id, message.sender_device_id,
                   message.client_msg_id, bytes(message.body), t,
                   message.HasField("membership"))


class History:
    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.sends: list[SendRecord] = []
        self.streams: dict[Device, list[Observed]] = defaultdict(list)
        self.devices: dict[Device, None] = {}
        self.members: dict[str, set[str]] = defaultdict(set)
        self.finals: dict[Device, dict[str, int]] = {}
        self.store: dict[str, list[Observed]] = {}
        self.faults: list[tuple[float, str]] = []

    def now(self) -> float:
        return time.monotonic() - self.t0

    # ------------------------------------------------------------------ recording
    def device(self, user: str, device: str) -> None:
        """A device that takes part from the start: checked for every chat of its user."""
        self.devices[(user, device)] = None

    def member(self, chat: str, users: Iterable[str]) -> None:
        """These users are members of chat since before its first message."""
        self.members[chat].update(users)

    def fault(self, description: str) -> None:
        self.faults.append((self.now(), description))

    def invoke(self, chat: str, user: str, device: str, client_msg_id: str,
               body: bytes) -> SendRecord:
        record = SendRecord(chat, user, device, client_msg_id, bytes(body), self.now())
        self.sends.append(record)
        return record

    def ok(self, record: SendRecord, seq: int) -> None:
        record.outcome, record.seq, record.t_complete = "ok", seq, self.now()

    def fail(self, record: SendRecord, error: str) -> None:
        record.outcome, record.error, record.t_complete = "fail", error, self.now()

    def info(self, record: SendRecord, error: str) -> None:
        record.outcome, record.error, record.t_complete = "info", error, self.now()

    def received(self, user: str, device: str, message) -> None:
        if isinstance(message, Observed):  # stamped with its arrival, like a protobuf one
            message = replace(message, t=self.now())
        else:
            message = Observed.of(message, self.now())
        self.streams[(user, device)].append(message)

    def final(self, user: str, device: str, heads: Mapping[str, int]) -> None:
        """After healing and a completed final sync: the heads of the device's chats (from
        ListChats or the store). Only devices with a final state are checked for loss/gaps."""
        self.devices[(user, device)] = None
        self.finals[(user, device)] = dict(heads)

    def stored(self, chat: str, rows: Iterable[Observed]) -> None:
        """The store's messages of a chat (any order)."""
        self.store[chat] = sorted(rows, key=lambda o: o.seq)

    # ------------------------------------------------------------------ checking
    def check(self) -> list[str]:
        out: list[str] = []
        acked = [s for s in self.sends if s.outcome == "ok"]
        sent_by_key: dict[tuple[str, str, str], list[SendRecord]] = defaultdict(list)
        for s in self.sends:
            sent_by_key[(s.chat, s.user, s.client_msg_id)].append(s)

        # Every observation of a (chat, seq), wherever it came from.
        seen: dict[tuple[str, int], dict[Content, str]] = defaultdict(dict)
        events = {(o.chat, o.seq, o.content) for stream in (*self.streams.values(),
                                                           *self.store.values())
                  for o in stream if o.membership}
        for s in acked:
            seen[(s.chat, s.seq)].setdefault(
                (s.user, s.device, s.client_msg_id, s.body), f"SendAck to {s.user}/{s.device}")
        for (user, device), stream in self.streams.items():
            for o in stream:
                seen[(o.chat, o.seq)].setdefault(o.content, f"stream of {user}/{device}")
        for chat, rows in self.store.items():
            for o in rows:
                seen[(o.chat, o.seq)].setdefault(o.content, "store")

        # I4: one (chat, seq), one content
        for (chat, seq), contents in sorted(seen.items()):
            if len(contents) > 1:
                variants = "; ".join(f"{c[0]}/{c[1]} {c[2]!r} {c[3][:40]!r} (in {where})"
                                     for c, where in contents.items())
                out.append(f"I4 seq reuse: {chat}#{seq} has {len(contents)} contents: {variants}")

        # I2: one (chat, sender, client_msg_id), one seq
        seqs_of: dict[tuple[str, str, str], set[int]] = defaultdict(set)
        for (chat, seq), contents in seen.items():
            for sender, _device, cmid, _body in contents:
                seqs_of[(chat, sender, cmid)].add(seq)
        for (chat, sender, cmid), seqs in sorted(seqs_of.items()):
            if len(seqs) > 1:
                out.append(f"I2 duplicate message: {chat} {sender} {cmid!r} stored under seqs "
                           f"{sorted(seqs)}")

        # phantoms: nobody sent it, or its send was refused for good
        for (chat, seq), contents in sorted(seen.items()):
            for content in contents:
                if (chat, seq, content) in events:
                    continue
                sender, device, cmid, body = content
                records = sent_by_key.get((chat, sender, cmid))
                if not records:
                    out.append(f"phantom: {chat}#{seq} from {sender}/{device} {cmid!r} was "
                               f"never sent")
                elif all(r.outcome == "fail" for r in records):
                    out.append(f"phantom: {chat}#{seq} exists but its send was refused: "
                               f"{records[-1].describe()}")
                elif not any(r.body == body and r.device == device for r in records):
                    out.append(f"altered: {chat}#{seq} {cmid!r} arrived as {device} "
                               f"{body[:40]!r}, sent as {records[0].device} "
                               f"{records[0].body[:40]!r}")

        # I2 delivery and I3 order, per device stream
        for (user, device), stream in sorted(self.streams.items()):
            last: dict[str, int] = {}
            held: dict[str, set[int]] = defaultdict(set)
            for o in stream:
                if o.seq in held[o.chat]:
                    out.append(f"I2 duplicate delivery: {user}/{device} got {o.chat}#{o.seq} "
                               f"again at t={o.t:.2f}s{self._during(o.t)}")
                elif o.chat in last and o.seq < last[o.chat]:
                    out.append(f"I3 order: {user}/{device} got {o.chat}#{o.seq} after "
                               f"#{last[o.chat]} at t={o.t:.2f}s{self._during(o.t)}")
                held[o.chat].add(o.seq)
                last[o.chat] = max(o.seq, last.get(o.chat, 0))

        # I1 and I3 gaps, on the final logs
        own_seqs: dict[tuple[Device, str], set[int]] = defaultdict(set)
        for (chat, seq), contents in seen.items():
            for sender, device, _cmid, _body in contents:
                own_seqs[((sender, device), chat)].add(seq)
        heads: dict[str, int] = defaultdict(int)
        for (chat, seq) in seen:
            heads[chat] = max(heads[chat], seq)
        for dev, final in self.finals.items():
            for chat, head in final.items():
                heads[chat] = max(heads[chat], head)
        for (user, device) in sorted(self.finals):
            stream_seqs: dict[str, set[int]] = defaultdict(set)
            for o in self.streams.get((user, device), ()):
                stream_seqs[o.chat].add(o.seq)
            for chat in sorted(c for c, users in self.members.items() if user in users):
                mine = own_seqs.get(((user, device), chat), set())
                for s in acked:
                    if s.chat == chat and (s.user, s.device) != (user, device) and \
                            s.seq not in stream_seqs[chat]:
                        out.append(f"I1 lost: {user}/{device} never got {s.describe()}"
                                   f"{self._during(s.t_invoke)}")
                held = stream_seqs[chat] | mine
                missing = sorted(set(range(1, heads[chat] + 1)) - held)
                if missing:
                    near = [f"{o.seq}@{o.t:.2f}" for o in self.streams.get((user, device), ())
                            if o.chat == chat and missing[0] - 4 <= o.seq <= missing[-1] + 4]
                    out.append(f"I3 gap: {user}/{device}'s final log of {chat} (head "
                               f"{heads[chat]}) lacks seqs {_ranges(missing)}; its arrivals "
                               f"around them (seq@t): {' '.join(near[:40])}")

        # the store: the authority on what exists
        for chat, rows in sorted(self.store.items()):
            seqs = [o.seq for o in rows]
            if seqs != list(range(1, len(seqs) + 1)):
                out.append(f"store gap: {chat} holds seqs {_ranges(seqs)}, not 1..{len(seqs)}")
            stored = {o.seq for o in rows}
            for s in acked:
                if s.chat == chat and s.seq not in stored:
                    out.append(f"I1 lost from the store: {s.describe()}")
        return out

    def _during(self, t: float) -> str:
        """The latest fault injected at or before t, for the counter-example."""
        active = [d for ft, d in self.faults if ft <= t]
        return f" (after fault: {active[-1]})" if active else ""

    def summary(self) -> str:
        outcomes: dict[str, int] = defaultdict(int)
        for s in self.sends:
            outcomes[s.outcome] += 1
        received = sum(len(s) for s in self.streams.values())
        faults = ", ".join(f"{d} at {t:.2f}s" for t, d in self.faults) or "none"
        return (f"{len(self.sends)} sends ({dict(outcomes)}), {received} receipts on "
                f"{len(self.streams)} devices, faults: {faults}")


def _ranges(seqs: Iterable[int]) -> str:
    """[1, 2, 3, 7, 9, 10] -> '1-3,7,9-10' (short counter-examples)."""
    parts: list[str] = []
    run: list[int] = []
    for s in sorted(seqs):
        if run and s == run[-1] + 1:
            run.append(s)
            continue
        if run:
            parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}")
        run = [s]
    if run:
        parts.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else f"{run[0]}")
    return ",".join(parts) or "none"


class Recorder:
    """The asyncio side of a History: records what SDK clients send and receive.

    `watch(client, user, device)` drains `client.messages()` into the device's stream until the
    client closes; `send(client, user, device, chat, body, client_msg_id)` calls `client.send`
    and records the attempt and its outcome (ServerError: fail, unless retryable; anything else,
    a timeout or ConnectionLost: info). `stop()` ends the drains (after the clients closed)."""

    def __init__(self, history: History | None = None) -> None:
        self.history = history or History()
        self._drains: list[asyncio.Task] = []
        self.clients: dict[Device, object] = {}

    def watch(self, client, user: str, device: str) -> None:
        self.history.device(user, device)
        self.clients[(user, device)] = client
        self._drains.append(asyncio.ensure_future(self._drain(client, user, device)))

    async def _drain(self, client, user: str, device: str) -> None:
        from switchboard.client import ConnectionLost
        try:
            async for message in client.messages():
                self.history.received(user, device, message)
        except ConnectionLost:
            pass

    async def send(self, client, user: str, device: str, chat: str, body: bytes,
                   client_msg_id: str):
        """One recorded attempt (the SDK itself retries UNAVAILABLE/RATE_LIMITED and across
        reconnects within its send_timeout). Returns the SendAck or None."""
        from switchboard.client import ServerError
        from switchboard.client.sdk import RETRYABLE
        record = self.history.invoke(chat, user, device, client_msg_id, body)
        try:
            ack = await client.send(chat, body, client_msg_id=client_msg_id)
        except ServerError as exc:
            if exc.code in RETRYABLE:
                self.history.info(record, str(exc))
            else:
                self.history.fail(record, str(exc))
            return None
        except asyncio.CancelledError:
            self.history.info(record, "cancelled")
            raise
        except Exception as exc:  # TimeoutError, ConnectionLost: unknown outcome
            self.history.info(record, f"{type(exc).__name__}: {exc}")
            return None
        self.history.ok(record, ack.seq)
        return ack

    def missing(self) -> dict[Device, int]:
        """Per watched device, how many acknowledged messages of its chats (sent by another
        device) its stream does not hold yet: poll it to zero before the final check, so that
        delivery is seen live, not only through the final sync."""
        h = self.history
        out = {}
        for dev in self.clients:
            got = {(o.chat, o.seq) for o in h.streams.get(dev, ())}
            count = sum(1 for s in h.sends if s.outcome == "ok" and (s.user, s.device) != dev
                        and dev[0] in h.members.get(s.chat, ()) and (s.chat, s.seq) not in got)
            if count:
                out[dev] = count
        return out

    async def finish(self, store=None, timeout: float = 20.0) -> None:
        """Heal: every watched client (re)connected, a final Sync completed and its backlog
        drained into the history; then each device's heads (ListChats) and, with `store` (an
        open Store of any kind, read through its interface), the store's rows of the history's
        chats (`member()`) are recorded. Call check() afterwards."""
        deadline = asyncio.get_running_loop().time() + timeout
        for (user, device), client in self.clients.items():
            while not client.connected:
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError(f"{user}/{device} did not reconnect in {timeout}s "
                                         f"(last close {client.last_close_code} "
                                         f"{client.last_close_reason!r})")
                await asyncio.sleep(0.05)
            await client.sync()
            heads = {s.chat_id: s.head_seq for s in await client.list_chats()}
            self.history.final(user, device, heads)
        while any(client._inbox.qsize() for client in self.clients.values()):
            await asyncio.sleep(0.02)  # the drains take what the final syncs brought
        await asyncio.sleep(0.1)
        if store is not None:
            for chat in self.history.members:
                messages = await store.read_messages(chat, 0, 1_000_000)
                if messages:
                    self.history.stored(chat, [Observed(chat, m.seq, m.sender_user,
                                                        m.sender_device, m.client_msg_id, m.body,
                                                        membership=m.event is not None)
                                               for m in messages])

    async def stop(self) -> None:
        for task in self._drains:
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._drains, return_exceptions=True)
        self._drains.clear()
