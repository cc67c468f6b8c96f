"""Packaging facts: the compiled core, its stub, and a serving path free of torch."""

import ast
import subprocess
import sys
from pathlib import Path

import mmserve
from mmserve import _C
from mmserve.cpu import build_info, cpu_features

ROOT = Path(__file__).resolve().parents[1]


def test_compiled_core_is_portable_and_reports_the_cpu():
    features = cpu_features()
    assert isinstance(features, list) and all(isinstance(f, str) for f in features)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists() and " avx2 " in cpuinfo.read_text():
        assert "avx2" in features
    assert build_info()["baseline_isa_beyond_default"] is False


def test_stub_declares_every_public_name_of_the_module():
    stub = ast.parse((Path(mmserve.__file__).parent / "_C.pyi").read_text())
    declared = {n.name for n in stub.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    declared |= {n.target.id for n in stub.body if isinstance(n, ast.AnnAssign)}
    public = {n for n in dir(_C) if not n.startswith("_")} | {"__version__"}
    assert public == declared


def test_no_march_native_in_the_build():
    code = [line.split("#")[0] for line in (ROOT / "CMakeLists.txt").read_text().splitlines()]
    assert not any("march" in line or "mtune" in line for line in code)
    for ninja in ROOT.glob("build/*/build.ninja"):  # the flags actually used, when built here
        assert "-march=native" not in ninja.read_text()


def test_serving_path_never_imports_torch(bundled_settings):
    code = f"""
import sys
from mmserve.config import Settings
from mmserve.embedder import LocalEmbedder
import mmserve.cli, mmserve.dev.demo, mmserve.dev.quality
e = LocalEmbedder(Settings(model_dir={str(bundled_settings.model_dir)!r},
                           cache_dir={str(bundled_settings.cache_dir)!r}))
v = e.embed_texts(["a red circle"])
assert v.shape == (1, e.dim), v.shape
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers'))
assert not bad, bad
print("ok")
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


def test_bundled_model_is_small_enough_to_ship(bundled_model_dir):
    total = sum(p.stat().st_size for p in bundled_model_dir.iterdir() if p.is_file())
    assert total <= 20 * 1024 * 1024
