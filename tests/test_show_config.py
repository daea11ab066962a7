"""fastconv.show_config() and ``python -m fastconv`` (config report and ``explain``)."""
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import fastconv as fc
from fastconv import __main__ as cli
from fastconv import _show_config

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("fastconv", "Python", "Dependencies", "CPU", "Threading", "BLAS", "Caches",
            "Cost model", "CUDA", "Dask", "Environment")


def run_cli(args, tmp_path):
    env = dict(os.environ, FASTCONV_CACHE_DIR=str(tmp_path / "cache"),
               PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in
                                           [os.environ.get("PYTHONPATH")] if p]))
    return subprocess.run([sys.executable, "-m", "fastconv", *args], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)


def test_python_m_fastconv_prints_every_section(tmp_path):
    proc = run_cli([], tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for section in SECTIONS:
        assert re.search(rf"^{section}:$", out, re.M), f"section {section!r} missing:\n{out}"
    for key in ("version: " + fc.__version__, "numba:", "numpy:", "scipy:", "vector ISA:",
                "numba threads:", "threading layer:", "autotune cache:", "cost_model.json",
                "available:"):
        assert key in out, f"{key!r} missing:\n{out}"
    assert str(tmp_path / "cache") in out                 # FASTCONV_CACHE_DIR is honoured


def test_show_config_modes(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    info = fc.show_config(mode="dicts")
    assert list(info) == list(SECTIONS)
    assert all(isinstance(v, dict) for v in info.values())
    assert not any("error" in v for v in info.values()), info
    assert info["CPU"]["vector ISA"]
    json.dumps(info, default=str)
    buf = io.StringIO()
    assert fc.show_config(file=buf) is None
    assert buf.getvalue().startswith("fastconv:\n  version: ")
    with pytest.raises(ValueError, match="mode"):
        fc.show_config(mode="json")


def test_corrupt_autotune_cache_is_reported_not_fatal(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTCONV_CACHE_DIR", str(tmp_path))
    (tmp_path / "autotune.json").write_text("{not json")
    caches = fc.show_config(mode="dicts")["Caches"]
    assert "unreadable" in caches["autotune cache"]
    (tmp_path / "autotune.json").write_text(json.dumps({"cpu|numba|fastconv": {"a": "direct",
                                                                               "b": "fft"}}))
    assert "2 shapes" in fc.show_config(mode="dicts")["Caches"]["autotune cache"]


@pytest.mark.parametrize("data, machine", [
    ({"_comment": "fitted by bench/fit_cost_model.py on AMD EPYC"}, "AMD EPYC"),
    ({"_machine": {"cpu": "Intel Xeon"}, "direct": {}}, "Intel Xeon"),
    ({"direct": {"overhead": 1.0}}, None),
])
def test_cost_model_machine(data, machine):
    assert _show_config._fitted_on(data) == machine


def test_python_m_fastconv_json(tmp_path):
    proc = run_cli(["--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert list(json.loads(proc.stdout)) == list(SECTIONS)


def test_explain_subprocess_matches_choose_algorithm(tmp_path):
    proc = run_cli(["explain", "--input", "8,64,56,56", "--weight", "64,64,3,3",
                    "--padding", "1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    choice = fc.choose_algorithm((8, 64, 56, 56), (64, 64, 3, 3), padding=1)
    assert f"algorithm: {choice.algorithm}\n" in proc.stdout
    assert f"reason: {choice.reason}" in proc.stdout
    for algo in choice.estimates:
        assert re.search(rf"^  {algo} +[0-9.]+ ms", proc.stdout, re.M), proc.stdout


@pytest.mark.parametrize("argv, kwargs", [
    (["--input", "64,1,28,28", "--weight", "10,1,5,5"], {}),
    (["--input", "1,3,224,224", "--weight", "64,3,7,7", "--stride", "2", "--padding", "3",
      "--dtype", "float64"], dict(stride=2, padding=3, dtype="float64")),
    (["--input", "4,32,64", "--weight", "32,1,9", "--groups", "32", "--padding", "same",
      "--dilation", "2"], dict(groups=32, padding="same", dilation=2)),
    (["--input", "2,8,20,20", "--weight", "8,8,3,3", "--padding", "((1, 0), (2, 1))",
      "--stride", "1,2"], dict(padding=((1, 0), (2, 1)), stride=(1, 2))),
    (["--input", "2,4,8,16,16", "--weight", "4,4,3,3,3", "--device", "cuda"],
     dict(device="cuda")),
])
def test_explain_prints_the_choice(argv, kwargs, capsys):
    assert cli.main(["explain", *argv]) == 0
    out = capsys.readouterr().out
    shapes = [tuple(int(v) for v in argv[i + 1].split(",")) for i in (0, 2)]
    choice = fc.choose_algorithm(*shapes, **kwargs)
    assert re.search(rf"^algorithm: {choice.algorithm}$", out, re.M), out
    assert out.count(" ms ") == len(choice.estimates)
    assert "<- chosen" in out


@pytest.mark.parametrize("argv, message", [
    (["explain", "--input", "8,a", "--weight", "1,1,1,1"], "comma-separated ints"),
    (["explain", "--input", "8,64,56,56"], "--weight"),
    (["explain", "--input", "8,3,56,56", "--weight", "64,4,3,3"], "input channels"),
    (["explain", "--input", "8,4,9,9", "--weight", "4,4,3,3", "--device", "tpu"],
     "invalid choice"),
    (["explain", "--input", "8,4,9,9", "--weight", "4,4,3,3", "--padding", "wide"],
     "per-side pairs"),
    (["explain", "--input", "8,4,9,9", "--weight", "4,4,3,3", "--dtype", "float99"],
     "--dtype"),
    (["explain", "--input", "8,4,9,9", "--weight", "4,4,3,3", "--stride", "0"], "stride"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_arguments_exit_with_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "usage:" in err, err


def test_bad_arguments_subprocess(tmp_path):
    proc = run_cli(["explain", "--input", "8,3,56,56", "--weight", "64,4,3,3"], tmp_path)
    assert proc.returncode == 2
    assert "python -m fastconv explain: error:" in proc.stderr
    assert "Traceback" not in proc.stderr
