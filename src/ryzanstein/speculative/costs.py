"""Costs: what one forward over n new tokens costs on this machine, v(n), measured and cached, with the cost per
token of a long forward (a prefill, what a draft model's catch-up costs); and what a draft token costs, the
estimates policy auto starts each generation from (`SpecCosts`).

A profile belongs to (model file, backend and the build of its kernels, threads, dtype, device, CPU, and the GPU's
name on a GPU): any change invalidates it. A forward is timed until its argmax ids are on the host, as a greedy
round verifies: on a GPU that copy is the synchronisation that ends the step, so the clock never stops before the
device. It is measured once in a few seconds (a progress line on stderr), kept as readable JSON under
`store.home()/profiles/`, written atomically. Policy auto refines the level online from the timings of real
rounds (auto_policy.py), keeping the measured shape v(n)/v(1).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import RyzansteinError
from ..machine import cpu_name
from ..models.base import Model
from ..models.store import home

N_MAX = 16  # verification widths profiled: 1..N_MAX (K = 0..15 drafts)
PREFILL_N = 128  # tokens of the forward that prices a prefill, per token (a draft's catch-up comes in such chunks)
PROFILE_VERSION = 1
NGRAM_TOKEN_S = 2e-5  # a prompt-lookup search, per drafted token, before the online estimate takes over


def profile_key(model: Model) -> dict:
    """What a profile depends on; a profile whose key differs is stale."""
    p = Path(model.info.path)
    st = p.stat() if p.exists() else None
    return {
        "model": model.info.name, "path": str(p), "size": st.st_size if st else None,
        "mtime": int(st.st_mtime) if st else None, "backend": model.info.backend, "threads": model.info.threads,
        "dtype": model.info.dtype, "device": model.info.device, "n_layers": model.info.n_layers,
        "cpu": cpu_name(), "cores": os.cpu_count(),
        # the build of the backend's compute code (ModelInfo.extra): new kernels make an old profile stale
        "kernels": model.info.extra.get("kernels"),
        **({"device_name": model.info.extra["device_name"]} if "device_name" in model.info.extra else {}),
        **({"draft_vocab": model.info.extra["draft_vocab"]} if "draft_vocab" in model.info.extra else {}),
    }


@dataclass
class CostProfile:
    """v_s[n-1] = seconds for one forward over n new tokens (logits for all n), n = 1..N_MAX; prefill_s = seconds
    per token of a PREFILL_N-token forward (the last row's logits only, as a prefill computes)."""

    v_s: list[float]
    key: dict = field(default_factory=dict)
    source: str = "measured"  # measured | cache | file:<path>
    draft_ratio: float | None = None  # a file may say what a drafted token costs there, as a fraction of v(1)
    prefill_s: float | None = None  # None: not measured (a profile file may leave it out)
    draft_prefill_ratio: float | None = None  # a file may say what a draft's catch-up costs per token, / v(1)

    def v(self, n: int) -> float:
        """Seconds of one forward over n tokens (linear extrapolation past N_MAX)."""
        if n <= len(self.v_s):
            return self.v_s[n - 1]
        slope = self.v_s[-1] - self.v_s[-2]
        return self.v_s[-1] + slope * (n - len(self.v_s))

    def ratio(self, n: int) -> float:
        return self.v(n) / self.v_s[0]

    def to_json(self) -> dict:
        return {"version": PROFILE_VERSION, "key": self.key, "v_s": self.v_s,
                "v_ratio": [round(x / self.v_s[0], 4) for x in self.v_s], "prefill_s": self.prefill_s,
                "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def measure(model: Model, context: int = 128, reps: int = 3, quiet: bool = False) -> CostProfile:
    """Median time of a forward over n = 1..N_MAX tokens after a `context`-token prefill, each until its n
    argmax ids are on the host (a greedy verification), and per token of a PREFILL_N-token forward there (its
    last row's argmax); cache left empty."""
    rng = np.random.default_rng(0)
    vocab = model.tokenizer.vocab_size
    n_prefill = min(PREFILL_N, model.n_ctx - context)
    ids = [int(t) for t in rng.integers(min(100, vocab // 2), min(vocab, 30000), size=context + max(n_prefill, N_MAX))]
    model.reset()
    model.score(ids[:context], last_only=True).argmax()
    base = model.pos
    # warm-up; on a GPU every width once: the first call of a shape picks (and may compile) its kernels
    for n in (range(1, N_MAX + 1) if model.info.device != "cpu" else (4,)):
        model.score(ids[context:context + n]).argmax()
        model.truncate(base)
    times: list[list[float]] = [[] for _ in range(N_MAX)]
    prefill: list[float] = []
    if not quiet:  # one line, whether stderr is a terminal or a log
        print(f"profiling {model.info.name} ({model.info.backend}, {model.info.threads} threads): v(n) for n = 1.."
              f"{N_MAX} and a {PREFILL_N}-token prefill, {reps} repeats", file=sys.stderr, flush=True)
    for r in range(reps):
        for n in range(1, N_MAX + 1):
            t0 = time.perf_counter()
            model.score(ids[context:context + n]).argmax()
            times[n - 1].append(time.perf_counter() - t0)
            model.truncate(base)
        t0 = time.perf_counter()
        model.score(ids[context:context + n_prefill], last_only=True).argmax()
        prefill.append((time.perf_counter() - t0) / n_prefill)
        model.truncate(base)
    model.reset()
    v = [float(np.median(t)) for t in times]
    for i in range(1, N_MAX):  # a wider forward is never cheaper in the model we plan with
        v[i] = max(v[i], v[i - 1])
    return CostProfile(v, profile_key(model), prefill_s=float(np.median(prefill)))


def _cache_path(key: dict) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return home() / "profiles" / f"{Path(key['path']).stem}-{key['backend']}-{digest}.json"


def save(profile: CostProfile, path: Path) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(profile.to_json(), f, indent=1)
    os.replace(tmp, path)


def _seconds(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0


def parse(d, path: Path, n: int | None = None) -> tuple[list[float], dict]:
    """v_s of a profile's JSON, and its optional numbers (prefill_s, draft_ratio, draft_prefill_ratio), checked:
    one finite positive number of seconds per width n = 1..len (exactly `n` of them if given, at least 2
    otherwise), the others positive and finite where present; RyzansteinError saying what is wrong."""
    v = d.get("v_s") if isinstance(d, dict) else None
    count = f"{n}" if n else "at least 2"
    if not isinstance(v, list) or len(v) < (n or 2) or (n and len(v) != n):
        raise RyzansteinError(f"cost profile {path}: v_s must be a list of {count} timings (one per n = 1, 2, ...), "
                              f"not {json.dumps(v, allow_nan=True)[:60]}")
    bad = next((i for i, x in enumerate(v) if not _seconds(x)), None)
    if bad is not None:
        raise RyzansteinError(f"cost profile {path}: v_s[{bad}] = {v[bad]!r} is not a positive, finite number of "
                              "seconds")
    extra = {name: d.get(name) for name in ("prefill_s", "draft_ratio", "draft_prefill_ratio")}
    for name, x in extra.items():
        if x is not None and not _seconds(x):
            raise RyzansteinError(f"cost profile {path}: {name} = {x!r} is not a positive, finite number")
    return [float(x) for x in v], extra


def load_file(path: str | Path) -> CostProfile:
    """A profile from a JSON file (another machine's, say), checked (parse). Its key is not checked."""
    try:
        d = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise RyzansteinError(f"cannot read cost profile {path}: {e}; make one with `ryzanstein profile`") from None
    try:
        v, extra = parse(d, path)
    except RyzansteinError as e:
        raise RyzansteinError(f"{e}; make one with `ryzanstein profile`") from None
    return CostProfile(v, d.get("key", {}), source=f"file:{path}", **extra)


def profile_for(model: Model, quiet: bool = False) -> CostProfile:
    """This machine's profile for `model`: from the cache when its key matches, else measured and cached.
    A cached profile that is invalid (hand-edited, damaged) is measured again, with a one-line warning."""
    key = profile_key(model)
    path = _cache_path(key)
    try:
        d = json.loads(path.read_text())
        # (one cached before prefill_s was measured lacks it: measured again)
        if d.get("version") == PROFILE_VERSION and d.get("key") == key and d.get("prefill_s") is not None:
            v, extra = parse(d, path, N_MAX)
            return CostProfile(v, key, source="cache", prefill_s=extra["prefill_s"])
    except (OSError, ValueError, AttributeError):
        pass  # no cache yet, not JSON, or not an object: measure
    except RyzansteinError as e:
        print(f"warning: {e}: measuring again", file=sys.stderr)
    prof = measure(model, quiet=quiet)
    save(prof, path)
    return prof


class SpecCosts:
    """What policy auto plans a generation with: the target's v(n), and the seconds a draft token costs.

    Each is read (or measured: seconds) the first time it is asked for and then kept, so an engine pays for
    them once, and only if a generation uses policy auto. `draft` is the draft model, None for a model-free
    proposer; `profile_file` is a cost profile to plan with instead of measuring this machine.
    """

    def __init__(self, target: Model, draft: Model | None, profile_file: str | None = None) -> None:
        self.target, self.draft, self.profile_file = target, draft, profile_file
        self._target_profile: CostProfile | None = None
        self._draft_profile: CostProfile | None = None
        self._draft_token_s: float | None = None

    def over(self, target: Model, draft: Model | None) -> SpecCosts:
        """The same estimates for other contexts over the same weights (their costs are these): what is known
        already is kept, what is not will be measured on the new contexts."""
        twin = SpecCosts(target, draft, self.profile_file)
        twin._target_profile, twin._draft_profile = self._target_profile, self._draft_profile
        twin._draft_token_s = self._draft_token_s
        return twin

    def target_profile(self) -> CostProfile:
        """The target's v(n): from the profile file, the on-disk cache, or measured now (a few seconds)."""
        if self._target_profile is None:
            f = self.profile_file
            self._target_profile = load_file(f) if f else profile_for(self.target)
        return self._target_profile

    def draft_profile(self) -> CostProfile:
        """The draft model's own v(n), read (or measured) once."""
        if self._draft_profile is None:
            self._draft_profile = profile_for(self.draft)
        return self._draft_profile

    def draft_token_s(self) -> float:
        """Seconds the proposer spends per drafted token (a model draft's own one-token forward)."""
        if self._draft_token_s is None:
            costs = self.target_profile()
            if self.draft is not None and costs.draft_ratio is not None:
                self._draft_token_s = costs.draft_ratio * costs.v(1)  # the profile's own machine
            elif self.draft is not None:
                # with a foreign target profile, keep the draft/target ratio measured here
                mine = profile_for(self.target) if self.profile_file else costs
                self._draft_token_s = self.draft_profile().v(1) * costs.v(1) / mine.v(1)
            else:
                self._draft_token_s = NGRAM_TOKEN_S  # refined online
        return self._draft_token_s

    def draft_prefill_token_s(self) -> float:
        """Seconds per token when a model draft catches up with many tokens at once (its measured prefill, in
        the same proportion to its drafted token as on this machine; a profile file may give it)."""
        if self.draft is None:
            return 0.0
        costs = self.target_profile()
        if costs.draft_prefill_ratio is not None:
            return costs.draft_prefill_ratio * costs.v(1)
        prof = self.draft_profile()
        per_token = prof.prefill_s if prof.prefill_s is not None else prof.v(N_MAX) / N_MAX
        return per_token * self.draft_token_s() / prof.v(1)
