"""`ryzanstein chat`: a conversation in the terminal, streamed, with the speculation shown on request.

Type a message and Enter. Several lines: end a line with a backslash to go on, or put the text between two
lines of three double quotes. Commands start with a slash (/help lists them). Ctrl-C stops the answer being
generated (at the prompt it clears the line); Ctrl-D or /bye leaves.

Each turn sends the whole conversation through the chat template; the engine keeps its KV cache and reuses the
longest prefix the new prompt shares with it, so a turn prefills only what is new (/stats shows it). The answer
is generated in a thread of its own, so Ctrl-C reaches this loop at once and the generation stops between two
rounds, its cache consistent for the next turn.
"""
from __future__ import annotations

import argparse
import queue
import re
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..config import GenerationConfig
from ..engine import Engine, Piece
from ..errors import ConfigError, RyzansteinError
from ..models.store import home
from ..speculative.stats import GenerationStats
from .args import add_generation_args, add_load_args, generation_config_from_args, load_config_from_args, parse_k

COLOURS = {"accepted": "\x1b[32m", "recovered": "\x1b[33m", "bonus": "\x1b[36m"}  # green, yellow, cyan
RESET, DIM = "\x1b[0m", "\x1b[2m"
PROMPT, MORE = ">>> ", "... "
BLOCK = '"""'
HELP = f"""\
  /set NAME VALUE   change a setting for the next answers (/set alone lists them)
  /show             the model, the draft and the settings
  /stats            the last answer: tokens/s, prompt tokens cached and new, drafts accepted, K chosen
  /clear            forget the conversation (the system prompt stays)
  /bye              leave (or Ctrl-D)
  /help             this list
Several lines: end a line with \\ to go on, or put them between two lines of {BLOCK}.
Ctrl-C stops an answer being generated; at the prompt it clears the line."""


def _seed(v: str) -> int | None:
    return None if v in ("none", "random") else int(v)


def _bool(v: str) -> bool:
    if v not in ("true", "false", "on", "off", "1", "0"):
        raise ValueError(v)
    return v in ("true", "on", "1")


def _tokens(v: str) -> int | None:
    return None if v == "none" else int(v)


def _k(v: str) -> int | None:
    return parse_k(v)


# /set NAME: (GenerationConfig field, parser, what it takes); `system` is the conversation's own
SETTINGS = {
    "temperature": ("temperature", float, "a number, 0 = greedy"),
    "top_p": ("top_p", float, "a number in (0, 1]"),
    "top_k": ("top_k", int, "an integer, 0 = off"),
    "min_p": ("min_p", float, "a number in [0, 1)"),
    "seed": ("seed", _seed, "an integer, or none for a fresh one each answer"),
    "max_tokens": ("max_new_tokens", _tokens, "an integer, or none: until the answer ends or the context is full"),
    "k": ("k", _k, "an integer in [0, 16] (0 = plain decoding), or auto"),
    "k_min": ("k_min", int, "an integer"),
    "k_max": ("k_max", int, "an integer in [0, 16]"),
    "policy": ("policy", str, "auto, fixed, heuristic or confidence"),
    "p_min": ("p_min", float, "a number in [0, 1)"),
    "min_speedup": ("min_speedup", float, "a number in (0, 10]"),
    "stop": ("stop", lambda v: () if v == "none" else (v,), "a stop string, or none"),
    "ignore_eos": ("ignore_eos", _bool, "true or false"),
    "system": ("system", str, "the system prompt, or none"),
}


def add_parser(sub) -> None:
    p = sub.add_parser("chat", help="talk with a model in the terminal (streaming, /help for commands)")
    p.add_argument("--system", default=None, help="a system prompt for the conversation (/set system changes it)")
    p.add_argument("--history", default=None, help="the file that keeps what you typed, for the arrow keys "
                   "(default: chat_history in the model store's folder, ~/.cache/ryzanstein; '' keeps none)")
    p.add_argument("--show-speculation", action="store_true", help="colour accepted draft tokens green, recovered "
                   "yellow, bonus cyan (only when stdout is a terminal)")
    add_load_args(p)
    add_generation_args(p)
    p.set_defaults(func=cmd_chat, max_new_tokens=None)  # a chat answer runs until it ends, not to 256 tokens


def cmd_chat(a: argparse.Namespace) -> int:
    max_tokens = a.max_new_tokens
    a.max_new_tokens = max_tokens or GenerationConfig().max_new_tokens
    cfg = generation_config_from_args(a)  # validate the settings before any model loads
    print(f"loading {a.model} (draft {a.draft})...", file=sys.stderr, flush=True)
    engine = Engine(load_config_from_args(a))
    history = home() / "chat_history" if a.history is None else Path(a.history) if a.history else None
    chat = Chat(engine, cfg, max_tokens, a.system, colour=a.show_speculation and sys.stdout.isatty(),
                history=history)
    try:
        chat.run()
    finally:
        engine.close()
    return 0


@dataclass
class Turn:
    """The last answer: its stats (so far, if it was stopped) and whether Ctrl-C stopped it."""

    stats: GenerationStats
    stopped: bool = False


@dataclass
class Chat:
    engine: Engine
    cfg: GenerationConfig
    max_tokens: int | None  # None: until the answer ends or the context is full
    system: str | None = None
    colour: bool = False
    terminal: bool = field(default_factory=sys.stdout.isatty)  # answers shown with visible() control characters
    history: Path | None = None  # readline's history file
    messages: list[dict] = field(default_factory=list)
    last: Turn | None = None

    # the loop ---------------------------------------------------------------------------------------------
    def run(self) -> None:
        interactive = sys.stdin.isatty()
        if interactive:  # Ctrl-C stops an answer even where the chat was started with SIGINT ignored (a program
            # started in the background by a shell script, or under nohup, inherits that; Python then leaves it)
            signal.signal(signal.SIGINT, signal.default_int_handler)
        save = self._readline() if interactive else None
        try:
            self._loop(interactive)
        finally:
            if save is not None:
                save()

    def _loop(self, interactive: bool) -> None:
        if interactive:
            info = self.engine.target.info
            print(f"{info.name} (draft {self.engine.proposer.name if self.engine.proposer else 'none'}), "
                  f"context {self.engine.target.n_ctx} tokens. /help for commands, /bye or Ctrl-D to leave.")
            if self.colour:
                print("colours: " + " ".join(f"{COLOURS[k]}{k}{RESET}" for k in ("accepted", "recovered", "bonus"))
                      + ", plain steps uncoloured")
        while True:
            try:
                text = read_message(lambda p: input(p if interactive else ""))
            except KeyboardInterrupt:
                print("\nUse Ctrl-D or /bye to leave.")
                continue
            except EOFError:
                if interactive:
                    print()
                return
            if not text.strip():
                continue
            if text.startswith("/"):
                if self.command(text.strip()) == "bye":
                    return
                continue
            try:
                self.ask(text)
            except KeyboardInterrupt:  # between the answer's thread and the prompt: the turn is dropped
                if self.messages and self.messages[-1]["role"] == "user":
                    self.messages.pop()
                print(" (stopped)")

    def _readline(self):
        """Line editing and history for input(); a function that saves the history, or None without a file."""
        import readline  # changes how input() reads a terminal, process-wide: only for the chat

        path = self.history
        if path is None:
            return None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists():
                readline.read_history_file(path)
            readline.set_history_length(1000)
        except OSError:
            return None  # no history file: line editing still works

        def save() -> None:
            try:
                readline.write_history_file(path)
            except OSError:
                pass  # a read-only home: the history is lost, the chat was not
        return save

    # one turn -------------------------------------------------------------------------------------------
    def ask(self, text: str) -> None:
        """Send the conversation with `text`, stream the answer; keep both unless nothing came back."""
        self.messages.append({"role": "user", "content": text})
        prompt = ([{"role": "system", "content": self.system}] if self.system else []) + self.messages
        try:
            ids = self.engine.encode(prompt)
        except RyzansteinError as e:
            self.messages.pop()
            print(f"error: {e}" + (" (/clear starts a new conversation)" if len(self.messages) > 1 else ""))
            return
        budget = self.max_tokens or self.engine.target.n_ctx
        gen = self.engine.stream(ids, self.cfg.replace(max_new_tokens=budget))
        answer, stopped = self._stream(gen.pieces(), gen.halt)
        if gen.stats is not None:
            self.last = Turn(gen.stats, stopped)
        if answer:
            self.messages.append({"role": "assistant", "content": answer})
        else:
            self.messages.pop()

    def _stream(self, pieces, halt) -> tuple[str, bool]:
        """Print the pieces as they come (from a thread of their own); Ctrl-C stops them, after the round in
        progress (`halt`: a stretch of tokens that show no text makes no piece to stop at). (answer, stopped)."""
        out: queue.Queue = queue.Queue()
        stop = threading.Event()

        def work() -> None:
            try:
                for piece in pieces:
                    if stop.is_set():
                        break
                    out.put(piece)
            except BaseException as e:  # noqa: BLE001 - handed to the loop, which prints it
                out.put(e)
            finally:
                pieces.close()  # the generation ends between two rounds: its cache stays consistent
                out.put(None)

        thread = threading.Thread(target=work, name="ryzanstein-chat", daemon=True)
        thread.start()
        answer, error = [], None
        while True:
            try:  # Ctrl-C may land anywhere in here: it only ever sets `stop`
                try:
                    item = out.get(timeout=0.1)
                except queue.Empty:
                    if thread.is_alive():
                        continue
                    break  # the end mark was lost to a Ctrl-C
                if item is None:
                    break
                if isinstance(item, BaseException):
                    error = item
                elif not stop.is_set():
                    answer.append(item.text)
                    self._show(item)
            except KeyboardInterrupt:
                stop.set()
                halt()
        while thread.is_alive():  # never two generations on one cache: the next turn waits for this one's end
            try:
                thread.join(0.1)
            except KeyboardInterrupt:
                stop.set()
                halt()
        stopped = stop.is_set()
        print(f" {DIM}(stopped){RESET}" if stopped and self.colour else " (stopped)" if stopped else "", flush=True)
        if error is not None:
            if not isinstance(error, RyzansteinError):
                raise error
            print(f"error: {error}")
        return "".join(answer), stopped

    def _show(self, piece: Piece) -> None:
        if self.colour and piece.spans:
            text = "".join(f"{COLOURS[k]}{visible(t)}{RESET}" if k in COLOURS else visible(t) for t, k in piece.spans)
        else:
            text = visible(piece.text) if self.terminal else piece.text
        sys.stdout.write(text)
        sys.stdout.flush()

    # commands ---------------------------------------------------------------------------------------------
    def command(self, line: str) -> str | None:
        name, _, rest = line.partition(" ")
        if name in ("/bye", "/exit", "/quit"):
            return "bye"
        if name in ("/help", "/?"):
            print(HELP)
        elif name == "/set":
            self.set(rest.strip())
        elif name == "/show":
            self.show()
        elif name == "/stats":
            print(self.stats_text())
        elif name == "/clear":
            self.messages.clear()
            print("Cleared the conversation.")
        else:
            print(f"Unknown command {name}: /help lists the commands.")
        return None

    def set(self, arg: str) -> None:
        name, _, value = arg.partition(" ")
        if name == "parameter":  # ollama's spelling: /set parameter temperature 0.2
            name, _, value = value.strip().partition(" ")
        value = value.strip()
        if name not in SETTINGS or not value:
            if name and name not in SETTINGS:
                print(f"Unknown setting {name!r}.", end=" ")
            print("/set NAME VALUE, NAME one of:")
            for n, (_, _, what) in SETTINGS.items():
                print(f"  {n:<12} {what}")
            return
        fld, parse, what = SETTINGS[name]
        try:
            parsed = parse(value)
        except (ValueError, argparse.ArgumentTypeError):
            print(f"/set {name} {value}: {name} takes {what}")
            return
        if fld == "system":
            self.system = None if value == "none" else value
        elif fld == "max_new_tokens":
            if parsed is not None and parsed < 1:
                print(f"/set {name} {value}: {name} takes {what}")
                return
            self.max_tokens = parsed
        else:
            try:
                changes = {fld: parsed}
                if fld == "k":  # k auto hands K back to the policy auto; an integer fixes it
                    changes["policy"] = "auto" if parsed is None else "fixed"
                self.cfg = self.cfg.replace(**changes)
            except ConfigError as e:
                print(f"/set {name} {value}: {e}")
                return
        print(f"Set {name} to {value}.")

    def show(self) -> None:
        e, c = self.engine, self.cfg
        info = e.target.info
        print(f"model      {info.name} ({info.backend} backend, {info.dtype}), context {e.target.n_ctx} tokens")
        print(f"draft      {e.proposer.name if e.proposer else 'none'}")
        print(f"system     {self.system or 'none'}")
        print(f"sampling   temperature {c.temperature}, top_p {c.top_p}, top_k {c.top_k}, min_p {c.min_p}, "
              f"seed {c.seed if c.seed is not None else 'none'}")
        print(f"answers    max_tokens {self.max_tokens or 'none'}, stop {list(c.stop) or 'none'}, "
              f"ignore_eos {c.ignore_eos}")
        print(f"drafting   k {c.k if c.k is not None else 'auto'}, policy {c.policy}, k_min {c.k_min}, "
              f"k_max {c.k_max}, p_min {c.p_min}, min_speedup {c.min_speedup}")
        print(f"turns      {sum(m['role'] == 'user' for m in self.messages)} in this conversation")

    def stats_text(self) -> str:
        if self.last is None:
            return "No answer yet."
        s, stopped = self.last.stats, self.last.stopped
        lines = [f"last answer{' (stopped)' if stopped else ''}: {s.num_tokens} tokens, {s.tokens_per_s:.1f} "
                 f"tokens/s (decode {s.decode_tokens_per_s:.1f} tokens/s, time to first token "
                 f"{s.ttft_s * 1000:.0f} ms)",
                 f"prompt: {s.prompt_tokens} tokens, {s.cached_prompt_tokens} cached, "
                 f"{s.prompt_tokens - s.cached_prompt_tokens} new (prefilled at {s.prefill_tokens_per_s:.0f} "
                 "tokens/s)"]
        if s.policy == "none":
            lines.append(f"speculation: off (draft {s.draft})")
        else:
            lines.append(f"speculation: draft {s.draft}, policy {s.policy}: {s.rounds} rounds, {s.spec_rounds} "
                         f"with drafts; {s.num_draft_tokens} drafted, {s.num_accepted} accepted (acceptance "
                         f"{s.acceptance_rate:.0%}), {s.mean_acceptance_length:.2f} tokens per forward")
            counts: dict[int, int] = {}
            for k in s.k_chosen:
                counts[k] = counts.get(k, 0) + 1
            if s.k_chosen:
                lines.append(f"K chosen: mean {sum(s.k_chosen) / len(s.k_chosen):.2f}; rounds by K: "
                             + ", ".join(f"{k}: {n}" for k, n in sorted(counts.items())))
        return "\n".join(lines)


CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # all but tab and newline


def visible(text: str) -> str:
    """Model text as a terminal may show it: control characters in caret notation (^[ for ESC, ^S for XOFF,
    which would stop the terminal's output), C1 controls as \\x9b. A model's text must not drive the terminal."""
    return CONTROL.sub(lambda m: "^" + chr(ord(m.group()) ^ 0x40) if m.group() < "\x80"
                       else f"\\x{ord(m.group()):02x}", text)


def read_message(read) -> str:
    """One message from `read(prompt)`: a line; lines ending in a backslash go on; a block between two lines of
    three double quotes (the quotes may share a line with text, as in ollama)."""
    line = read(PROMPT)
    if line.lstrip().startswith(BLOCK):
        first = line.lstrip()[len(BLOCK):]
        if first.rstrip().endswith(BLOCK) and first.strip():  # """one line"""
            return first.rstrip()[:-len(BLOCK)]
        lines = [first] if first else []
        while True:
            line = read(MORE)
            if line.rstrip().endswith(BLOCK):
                last = line.rstrip()[:-len(BLOCK)]
                if last:
                    lines.append(last)
                return "\n".join(lines)
            lines.append(line)
    lines = []
    while line.endswith("\\"):
        lines.append(line[:-1])
        line = read(MORE)
    return "\n".join(lines + [line])

