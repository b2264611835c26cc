"""Token ids -> text as it streams: never a broken UTF-8 character, never a piece of a stop string."""
from __future__ import annotations

from .base import Tokenizer


class TextStream:
    """Incremental detokenizer with stop strings.

    Decodes a small window [prefix_offset:] of ids and emits only text that no later token can change:
    a window ending in U+FFFD (an incomplete UTF-8 sequence) waits for more tokens. Text that could still
    become a stop string is held back until it cannot.
    With `positions=True` it also records, for each character of `text`, the index in `ids` of the token that
    completed it (`char_ids`): which token a streamed character came from (a character whose UTF-8 bytes span
    several tokens belongs to the last of them).
    """

    def __init__(self, tokenizer: Tokenizer, stop: tuple[str, ...] = (), positions: bool = False) -> None:
        self.tok, self.stop = tokenizer, stop
        self.char_ids: list[int] | None = [] if positions else None
        self.ids: list[int] = []
        self._prefix = self._read = 0  # ids[prefix:read] were decoded already; ids[read:] are new
        self.text = ""  # all text decoded so far
        self.sent = 0  # len of text already returned (the pieces so far)
        self.stopped = False  # a stop string was found; text is cut before it
        self.n_ids_at_stop = 0

    def add(self, ids: list[int]) -> str:
        """Take new ids; return the text that is now safe to show."""
        if self.stopped:
            return ""
        self.ids.extend(ids)
        prefix_text = self.tok.decode(self.ids[self._prefix:self._read])
        new_text = self.tok.decode(self.ids[self._prefix:])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            self._append(new_text[len(prefix_text):], prefix_text)
            self._prefix, self._read = self._read, len(self.ids)
        return self._release(final=False)

    def finish(self) -> str:
        """End of generation: return whatever is left (an unfinished character shows as U+FFFD)."""
        if not self.stopped and self._read < len(self.ids):
            prefix_text = self.tok.decode(self.ids[self._prefix:self._read])
            self._append(self.tok.decode(self.ids[self._prefix:])[len(prefix_text):], prefix_text)
            self._read = len(self.ids)
        return self._release(final=True)

    def _append(self, added: str, prefix_text: str) -> None:
        """Add the text that ids[_read:] completed (decoded after `prefix_text`, the window's settled start)."""
        self.text += added
        if self.char_ids is None:
            return
        owners = self.char_ids
        start, last = len(owners), len(self.ids) - 1
        for j in range(self._read, last):  # several new tokens: what each one settles, decoding one more at a time
            upto = self.tok.decode(self.ids[self._prefix:j + 1])
            settled = len(upto.rstrip("\ufffd")) - len(prefix_text)  # an unfinished character is not settled
            owners.extend([j] * (min(max(settled, 0), len(added)) - (len(owners) - start)))
        owners.extend([last] * (len(added) - (len(owners) - start)))

    def _release(self, final: bool) -> str:
        if self.stop and not self.stopped:
            start = max(self.sent - max(len(s) for s in self.stop), 0)
            hits = [i for i in (self.text.find(s, start) for s in self.stop) if i >= 0]
            if hits:
                self.text = self.text[:min(hits)]
                if self.char_ids is not None:
                    del self.char_ids[len(self.text):]
                self.stopped, self.n_ids_at_stop = True, len(self.ids)
                final = True
        hold = 0 if final else self._stop_prefix_len()
        out = self.text[self.sent:len(self.text) - hold]
        self.sent += len(out)
        return out

    def _stop_prefix_len(self) -> int:
        """Length of the longest end of text that is the beginning of a stop string."""
        best = 0
        for s in self.stop:
            for n in range(min(len(s) - 1, len(self.text)), best, -1):
                if self.text.endswith(s[:n]):
                    best = n
                    break
        return best
