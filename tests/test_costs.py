"""Cost profiles: measured on real weights, cached atomically as readable JSON, invalidated when the model
file, backend, its kernels' build, threads or CPU change."""
import functools
import json

import pytest

from ryzanstein.speculative import costs


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("RYZANSTEIN_HOME", str(tmp_path))
    # a real measurement, one repeat rather than three: these tests check when it runs and what is cached
    monkeypatch.setattr(costs, "measure", functools.partial(costs.measure, reps=1))
    return tmp_path


def test_profile_is_measured_once_then_read_from_the_cache(home, llama_smol, capsys):
    first = costs.profile_for(llama_smol)
    assert first.source == "measured" and len(first.v_s) == costs.N_MAX
    assert all(b >= a for a, b in zip(first.v_s, first.v_s[1:])) and first.v_s[0] > 0
    assert "profiling smollm2-135m" in capsys.readouterr().err  # a progress line
    files = list((home / "profiles").glob("*.json"))
    assert len(files) == 1 and not list((home / "profiles").glob("*.tmp"))
    data = json.loads(files[0].read_text())  # readable JSON with the key it belongs to
    assert data["key"]["backend"] == "llama.cpp" and data["key"]["threads"] == llama_smol.info.threads
    assert data["v_ratio"][0] == 1.0
    assert data["key"]["kernels"].startswith("llama-cpp-python ")
    again = costs.profile_for(llama_smol)
    assert again.source == "cache" and again.v_s == first.v_s
    # a prefill's cost (what a draft's catch-up costs) is measured too, per token: under the cost of a forward
    # over N_MAX tokens (how far under a step is a speed figure for a benchmark: one noisy repeat halved the gap)
    assert 0 < first.prefill_s < first.v_s[-1] and data["prefill_s"] == again.prefill_s == first.prefill_s
    del data["prefill_s"]  # a profile cached before it was measured: measured again, without a warning
    files[0].write_text(json.dumps(data))
    capsys.readouterr()
    assert costs.profile_for(llama_smol).source == "measured" and "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("change", ["cpu", "threads", "file", "kernels"])
def test_cache_is_invalidated_when_what_it_measured_changes(home, llama_smol, monkeypatch, change):
    costs.profile_for(llama_smol)
    if change == "cpu":
        monkeypatch.setattr(costs, "cpu_name", lambda: "Another CPU 9000")
    elif change == "threads":
        monkeypatch.setattr(llama_smol.info, "threads", llama_smol.info.threads + 1)
    elif change == "kernels":  # an upgraded llama-cpp-python (or a rebuilt native extension)
        monkeypatch.setitem(llama_smol.info.extra, "kernels", "llama-cpp-python 99.0")
    else:
        key = costs.profile_key(llama_smol)
        monkeypatch.setattr(costs, "profile_key", lambda m: {**key, "mtime": key["mtime"] + 1})
    assert costs.profile_for(llama_smol).source == "measured"


def test_atomic_save_and_foreign_profile_file(tmp_path):
    prof = costs.CostProfile([0.01, 0.012, 0.015])
    path = tmp_path / "p" / "profile.json"
    costs.save(prof, path)
    assert json.loads(path.read_text())["v_s"] == prof.v_s and not list(path.parent.glob("*.tmp"))
    loaded = costs.load_file(path)
    assert loaded.v_s == prof.v_s and loaded.source.startswith("file:")
    assert loaded.v(5) == pytest.approx(0.015 + 2 * 0.003)  # extrapolated past the measured widths
    from ryzanstein.errors import RyzansteinError

    # a file may say what a drafted token and a draft's catch-up cost per token there, as fractions of v(1)
    costs.save(prof, path)
    path.write_text(json.dumps({**json.loads(path.read_text()), "draft_ratio": 0.3, "draft_prefill_ratio": 0.04}))
    spec = costs.SpecCosts(target=None, draft=object(), profile_file=str(path))
    assert spec.draft_token_s() == pytest.approx(0.003) and spec.draft_prefill_token_s() == pytest.approx(0.0004)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(RyzansteinError, match="cost profile .*bad.json: v_s must be a list"):
        costs.load_file(tmp_path / "bad.json")


BAD_V_S = [[], [0.0] * costs.N_MAX, [float("nan")] * costs.N_MAX, [-0.01] * costs.N_MAX, ["fast"] * costs.N_MAX,
           [[0.01]] * costs.N_MAX, None, [0.01]]


@pytest.mark.parametrize("v_s", BAD_V_S, ids=["empty", "zeros", "nan", "negative", "strings", "nested", "null",
                                              "one value"])
def test_an_invalid_cached_profile_is_measured_again_with_a_warning(home, llama_smol, capsys, v_s):
    good = costs.profile_for(llama_smol)
    path = costs._cache_path(costs.profile_key(llama_smol))
    data = json.loads(path.read_text())
    path.write_text(json.dumps({**data, "v_s": v_s}))  # json writes NaN as the bare word NaN, as Python reads it
    capsys.readouterr()
    again = costs.profile_for(llama_smol)
    assert again.source == "measured" and len(again.v_s) == costs.N_MAX and all(x > 0 for x in again.v_s)
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning")]
    assert len(err) == 1 and str(path) in err[0] and "measuring again" in err[0], err
    assert costs.profile_for(llama_smol).source == "cache" and good.key == again.key


@pytest.mark.parametrize("v_s", BAD_V_S[:6] + [[0.01, float("inf")]])
def test_an_invalid_cost_profile_file_is_refused_naming_it(tmp_path, v_s):
    from ryzanstein.errors import RyzansteinError

    path = tmp_path / "theirs.json"
    path.write_text(json.dumps({"v_s": v_s}))
    with pytest.raises(RyzansteinError, match="cost profile .*theirs.json") as e:
        costs.load_file(path)
    assert "\n" not in str(e.value)


def test_json_output_never_holds_nan_or_infinity():
    from ryzanstein.speculative.stats import GenerationStats

    d = GenerationStats(predicted_speedup=float("nan"), predicted_tokens_per_s=float("inf")).to_dict()
    assert d["predicted_speedup"] is None and d["predicted_tokens_per_s"] is None
    json.dumps(d, allow_nan=False)


def test_the_native_kernels_fingerprint_is_the_extension_build(smol_gguf):
    from ryzanstein.models import native

    build = costs.profile_key(native.NativeModel(smol_gguf, n_ctx=64, threads=1))["kernels"]
    assert build == native.build_id() and len(build) == 16 and int(build, 16) >= 0
