"""Cost profiles: what one forward over n new tokens costs on this machine, v(n), measured and cached.

A profile belongs to (model file, backend, threads, dtype, device, CPU): any change invalidates it. It is
measured once in a few seconds (a progress line on stderr), kept as readable JSON under
`store.home()/profiles/`, written atomically. Policy auto refines the level online from the timings of real
rounds (adaptive.py), keeping the measured shape v(n)/v(1).
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..models.base import Model

N_MAX = 16  # verification widths profiled: 1..N_MAX (K = 0..15 drafts)
PROFILE_VERSION = 1


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def profile_key(model: Model) -> dict:
    """What a profile depends on; a profile whose key differs is stale."""
    p = Path(model.info.path)
    st = p.stat() if p.exists() else None
    return {
        "model": model.info.name, "path": str(p), "size": st.st_size if st else None,
        "mtime": int(st.st_mtime) if st else None, "backend": model.info.backend, "threads": model.info.threads,
        "dtype": model.info.dtype, "device": model.info.device, "n_layers": model.info.n_layers,
        "cpu": cpu_name(), "cores": os.cpu_count(),
    }


@dataclass
class CostProfile:
    """v_s[n-1] = seconds for one forward over n new tokens (logits for all n), n = 1..N_MAX."""

    v_s: list[float]
    key: dict = field(default_factory=dict)
    source: str = "measured"  # measured | cache | file:<path>
    draft_ratio: float | None = None  # a file may say what a drafted token costs there, as a fraction of v(1)

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
                "v_ratio": [round(x / self.v_s[0], 4) for x in self.v_s], "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S")}


def measure(model: Model, context: int = 128, reps: int = 3, quiet: bool = False) -> CostProfile:
    """Median time of a forward over n = 1..N_MAX tokens after a `context`-token prefill; cache left empty."""
    rng = np.random.default_rng(0)
    vocab = model.tokenizer.vocab_size
    ids = [int(t) for t in rng.integers(100, min(vocab, 30000), size=context + N_MAX)]
    model.reset()
    model.forward(ids[:context], last_only=True)
    base = model.pos
    model.forward(ids[context:context + 4])  # warm-up
    model.truncate(base)
    times: list[list[float]] = [[] for _ in range(N_MAX)]
    for r in range(reps):
        for n in range(1, N_MAX + 1):
            t0 = time.perf_counter()
            model.forward(ids[context:context + n])
            times[n - 1].append(time.perf_counter() - t0)
            model.truncate(base)
        if not quiet:
            print(f"\rprofiling {model.info.name} ({model.info.backend}, {model.info.threads} threads): "
                  f"{r + 1}/{reps}", end="", file=sys.stderr, flush=True)
    if not quiet:
        print(file=sys.stderr)
    model.reset()
    v = [float(np.median(t)) for t in times]
    for i in range(1, N_MAX):  # a wider forward is never cheaper in the model we plan with
        v[i] = max(v[i], v[i - 1])
    return CostProfile(v, profile_key(model))


def _cache_path(key: dict) -> Path:
    from ..models.store import home

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return home() / "profiles" / f"{Path(key['path']).stem}-{key['backend']}-{digest}.json"


def save(profile: CostProfile, path: Path) -> None:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(profile.to_json(), f, indent=1)
    os.replace(tmp, path)


def load_file(path: str | Path) -> CostProfile:
    """A profile from a JSON file (another machine's, say). Its key is not checked."""
    from ..errors import RyzansteinError

    try:
        d = json.loads(Path(path).read_text())
        v = [float(x) for x in d["v_s"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RyzansteinError(f"cannot read cost profile {path}: {e}; make one with `ryzanstein profile`") from e
    if len(v) < 2 or any(x <= 0 for x in v):
        raise RyzansteinError(f"cost profile {path} needs v_s: at least 2 positive timings")
    ratio = d.get("draft_ratio")
    return CostProfile(v, d.get("key", {}), source=f"file:{path}", draft_ratio=float(ratio) if ratio is not None else None)


def profile_for(model: Model, quiet: bool = False) -> CostProfile:
    """This machine's profile for `model`: from the cache when its key matches, else measured and cached."""
    key = profile_key(model)
    path = _cache_path(key)
    try:
        d = json.loads(path.read_text())
        if d.get("version") == PROFILE_VERSION and d.get("key") == key:
            return CostProfile([float(x) for x in d["v_s"]], key, source="cache")
    except (OSError, ValueError, KeyError):
        pass
    prof = measure(model, quiet=quiet)
    save(prof, path)
    return prof
