"""Broken model files and folders, and a disk that fills during a pull: each is exit 2 and one line naming
the file, what is wrong and the fix, never raw exception text (issue 14, defect 7)."""
import errno
import io
import json
import shutil

import pytest

from test_cli import one_line_error, run


@pytest.fixture(scope="module")
def folder(smol_gguf, tmp_path_factory):
    """The converted SmolLM2 folder (the torch backend's), converted once into the store if need be."""
    from ryzanstein.models import hf_folder_for_gguf, store

    return hf_folder_for_gguf(smol_gguf, store.KNOWN_MODELS["smollm2-135m"].sha256)


def copy_of(folder, tmp_path):
    """The folder's small files copied, its weights linked (never written through)."""
    out = tmp_path / "model"
    out.mkdir()
    for f in folder.iterdir():
        if f.suffix == ".safetensors":
            (out / f.name).symlink_to(f)
        else:
            shutil.copy(f, out / f.name)
    return out


def generate(model, *flags, home=None):
    return run("generate", "hi", "-n", "2", "--model", str(model), "--threads", "1", *flags,
               env={"RYZANSTEIN_HOME": str(home)} if home else None)


def test_config_json_that_is_not_json(folder, tmp_path):
    m = copy_of(folder, tmp_path)
    (m / "config.json").write_text('{"model_type": "llama",')
    one_line_error(generate(m), f"{m / 'config.json'} is not valid JSON")


def test_config_json_missing_a_required_key(folder, tmp_path):
    m = copy_of(folder, tmp_path)
    cfg = json.loads((m / "config.json").read_text())
    del cfg["hidden_size"]
    (m / "config.json").write_text(json.dumps(cfg))
    one_line_error(generate(m), f"{m / 'config.json'} lacks 'hidden_size'")


def test_truncated_safetensors(folder, tmp_path):
    m = copy_of(folder, tmp_path)
    weights = m / "model.safetensors"
    data = weights.read_bytes()[:5_000_000]
    weights.unlink()
    weights.write_bytes(data)
    one_line_error(generate(m), str(weights), "truncated or corrupt", "download")


def test_broken_tokenizer_json(folder, tmp_path):
    m = copy_of(folder, tmp_path)
    (m / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "BPE"')
    one_line_error(generate(m), f"{m / 'tokenizer.json'}", "not a valid tokenizer")


def test_torch_backend_on_a_truncated_gguf(smol_gguf, tmp_path):
    cut = tmp_path / "cut.gguf"
    with open(smol_gguf, "rb") as f:
        cut.write_bytes(f.read(20_000_000))
    one_line_error(generate(cut, "--backend", "torch", home=tmp_path / "home"), str(cut), "truncated or corrupt")


def test_disk_full_while_assembling_a_pull(tmp_path, monkeypatch, capsys):
    from ryzanstein.cli import main
    from ryzanstein.models import store
    from test_store import fake_model

    monkeypatch.setenv("RYZANSTEIN_HOME", str(tmp_path / "home"))
    fake_model(monkeypatch)

    class Full(io.FileIO):
        def write(self, b):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store, "open", lambda path, mode="r", *a, **k: Full(path, mode) if "w" in mode
                        else open(path, mode, *a, **k), raising=False)
    assert main(["models", "pull", "tiny"]) == 2
    lines = [ln for ln in capsys.readouterr().err.replace("\r", "\n").splitlines() if ln.strip()]
    assert lines[-1].startswith("error: no space left") and "tiny.gguf" in lines[-1], lines
    assert "RYZANSTEIN_HOME" in lines[-1] and not any("Errno" in ln for ln in lines)
    assert not list((tmp_path / "home" / "models").rglob("*.partial"))
