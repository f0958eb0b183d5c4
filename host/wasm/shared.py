"""Shared key/value data and shared queues, scoped by vm_id (ABI doc §6.5, §6.7).

Semantics follow cpp-host/Envoy: one process-wide CAS counter (starts at 1, skips
0, bumped on every successful set); ``set`` with cas 0 is unconditional; a non-zero
cas must equal the stored one for an existing key and creates a missing key.
Queue tokens are non-zero, process-wide, never reused while the queue exists;
re-registering a name returns the same token and moves delivery to the latest
registering root. Pure data: delivery of ``proxy_on_queue_ready`` is the VM's job.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

__all__ = ["QueueEntry", "SharedData", "SharedQueues"]


class SharedData:
    def __init__(self) -> None:
        self._stores: dict[str, dict[bytes, tuple[bytes, int]]] = {}
        self._cas = 0

    def _next_cas(self) -> int:
        self._cas = (self._cas + 1) & 0xFFFFFFFF
        if self._cas == 0:
            self._cas = 1
        return self._cas

    def get(self, vm_id: str, key: bytes) -> tuple[bytes, int] | None:
        return self._stores.get(vm_id, {}).get(key)

    def set(self, vm_id: str, key: bytes, value: bytes, cas: int) -> bool:
        store = self._stores.setdefault(vm_id, {})
        cur = store.get(key)
        if cas and cur is not None and cur[1] != cas:
            return False
        store[key] = (value, self._next_cas())
        return True

    def snapshot(self) -> dict[str, dict[str, tuple[str, int]]]:
        return {
            vm: {
                k.decode("utf-8", "replace"): (v.decode("utf-8", "replace"), c)
                for k, (v, c) in s.items()
            }
            for vm, s in self._stores.items()
        }

    def drop_vm_id(self, vm_id: str) -> None:
        self._stores.pop(vm_id, None)


@dataclass
class QueueEntry:
    token: int
    vm_id: str
    name: str
    items: deque[bytes] = field(default_factory=deque)
    receiver: object | None = None  # the RootContext to notify
    enqueued: int = 0
    dequeued: int = 0


class SharedQueues:
    MAX_ITEMS = 10_000  # per queue; beyond it the oldest item is dropped

    def __init__(self) -> None:
        self._by_name: dict[tuple[str, str], QueueEntry] = {}
        self._by_token: dict[int, QueueEntry] = {}
        self._next = 0

    def register(self, vm_id: str, name: str, receiver: object) -> QueueEntry:
        q = self._by_name.get((vm_id, name))
        if q is None:
            token = self._allocate()
            q = QueueEntry(token, vm_id, name)
            self._by_name[(vm_id, name)] = q
            self._by_token[token] = q
        q.receiver = receiver
        return q

    def _allocate(self) -> int:
        while True:
            self._next = (self._next + 1) & 0xFFFFFFFF
            if self._next and self._next not in self._by_token:
                return self._next

    def resolve(self, vm_id: str, name: str) -> QueueEntry | None:
        return self._by_name.get((vm_id, name))

    def by_token(self, token: int) -> QueueEntry | None:
        return self._by_token.get(token)

    def enqueue(self, token: int, value: bytes) -> QueueEntry | None:
        q = self._by_token.get(token)
        if q is None:
            return None
        if len(q.items) >= self.MAX_ITEMS:
            q.items.popleft()
        q.items.append(value)
        q.enqueued += 1
        return q

    def dequeue(self, token: int) -> tuple[bool, bytes | None]:
        """(known, item): unknown token → (False, None); empty → (True, None)."""
        q = self._by_token.get(token)
        if q is None:
            return False, None
        if not q.items:
            return True, None
        q.dequeued += 1
        return True, q.items.popleft()

    def drop_vm_id(self, vm_id: str) -> None:
        for key in [k for k in self._by_name if k[0] == vm_id]:
            q = self._by_name.pop(key)
            self._by_token.pop(q.token, None)

    def snapshot(self) -> list[dict[str, object]]:
        return [
            {
                "vm_id": q.vm_id,
                "name": q.name,
                "token": q.token,
                "depth": len(q.items),
                "enqueued": q.enqueued,
                "dequeued": q.dequeued,
            }
            for q in self._by_token.values()
        ]
