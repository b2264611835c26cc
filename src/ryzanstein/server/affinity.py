"""Which replica's KV cache holds a prompt's prefix: the memory of the cluster's router (cluster.py), kept apart
from Ray so that it is tested alone.

A prompt's token ids are hashed as a chain, one hash per position (h_i = hash(h_{i-1}, id_i)), so equal hashes
mean equal prefixes. Once a request is routed, the hashes at every `block`-th position and at its last are
remembered with the replica it went to. A new request's longest remembered prefix names the replicas that
served it: a conversation's next turn starts with the whole of the previous turn's prompt, so it finds that
turn's replica, whose cache (a batch slot chosen by the longest common prefix, batching.py) still holds it;
a system prompt every conversation shares is remembered for every replica that served one, and then picks
all of them. The table is bounded: the least recently used prefixes are forgotten first.

This is the scheme of vLLM's prefix caching and llm-d's KV-cache-aware scorer (hashes of token blocks), held
by the router rather than reported by the replicas: it knows what it sent where, not what a replica evicted.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection, Sequence


def prefix_hashes(ids: Sequence[int]) -> list[int]:
    """The chained hash of each prefix: entry i is the hash of ids[:i + 1]. Python hashes ints and tuples of
    ints the same in every process (only str and bytes hashes are salted)."""
    out, h = [], 0
    for t in ids:
        h = hash((h, int(t)))
        out.append(h)
    return out


class PrefixTable:
    """Remembered prefixes (by chained hash) -> the replicas that were sent a prompt starting with them."""

    def __init__(self, block: int = 16, max_entries: int = 200_000) -> None:
        if block < 1 or max_entries < 1:
            raise ValueError(f"block={block} and max_entries={max_entries} must be at least 1")
        self.block, self.max_entries = block, max_entries
        self._held: OrderedDict[int, dict[str, None]] = OrderedDict()  # hash -> replicas (an ordered set)

    def __len__(self) -> int:
        return len(self._held)

    def record(self, ids: Sequence[int], replica: str) -> None:
        """`replica` was sent a prompt of these ids: remember its prefixes at every block and at its end."""
        hashes = prefix_hashes(ids)
        for i in [*range(self.block - 1, len(hashes), self.block), len(hashes) - 1] if hashes else ():
            held = self._held.setdefault(hashes[i], {})
            held.pop(replica, None)
            held[replica] = None  # the most recent holder last
            self._held.move_to_end(hashes[i])
        while len(self._held) > self.max_entries:
            self._held.popitem(last=False)

    def holders(self, ids: Sequence[int], among: Collection[str]) -> tuple[int, list[str]]:
        """(length, replicas): the longest prefix of `ids`, at least one block long, that was sent to any of
        `among`, and those of `among` it was sent to; (0, []) when none was."""
        hashes = prefix_hashes(ids)
        for n in range(len(hashes), self.block - 1, -1):
            held = self._held.get(hashes[n - 1])
            if held:
                live = [r for r in held if r in among]
                if live:
                    self._held.move_to_end(hashes[n - 1])
                    return n, live
        return 0, []

    def forget(self, replica: str) -> None:
        """A replica is gone (its cache with it): drop it from every prefix."""
        for h in list(self._held):
            held = self._held[h]
            held.pop(replica, None)
            if not held:
                del self._held[h]
