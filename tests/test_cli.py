"""The `mmserve` command as a user runs it."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest


def run_cli(*args, settings=None, timeout=600):
    env = dict(os.environ)
    if settings is not None:
        env["MMSERVE_MODEL_DIR"] = str(settings.model_dir)
        env["MMSERVE_CACHE_DIR"] = str(settings.cache_dir)
    return subprocess.run(
        [sys.executable, "-m", "mmserve.cli", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in ("info", "export", "demo", "quality", "embed-text", "embed-image"):
        assert command in result.stdout


def test_info_shows_model_facts(bundled_settings):
    result = run_cli("info", settings=bundled_settings)
    assert result.returncode == 0, result.stderr
    assert "context length    77" in result.stdout
    assert "resample kernels" in result.stdout
    assert "current" in result.stdout


def test_embed_text_prints_unit_vectors(bundled_settings):
    result = run_cli("embed-text", "a red circle", "a blue square", settings=bundled_settings)
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["a red circle", "a blue square"]
    for row in rows:
        assert np.linalg.norm(row["embedding"]) == pytest.approx(1, abs=1e-4)


def test_embed_image_rejects_a_non_image_with_a_clear_error(bundled_settings, tmp_path):
    bad = tmp_path / "notes.jpg"
    bad.write_text("not an image")
    result = run_cli("embed-image", str(bad), settings=bundled_settings)
    assert result.returncode == 1
    assert "image 0: unsupported format" in result.stderr and "Traceback" not in result.stderr


def test_missing_export_tells_the_user_what_to_run(bundled_settings, tmp_path):
    env_settings = bundled_settings.model_copy(update={"cache_dir": tmp_path})
    result = run_cli("embed-text", "x", settings=env_settings)
    assert result.returncode == 1
    assert "run `mmserve export` first" in result.stderr


def test_demo_runs_every_query_kind_and_finds_the_right_images(bundled_settings, tmp_path):
    result = run_cli("demo", "--workdir", str(tmp_path), "--gallery-size", "200", settings=bundled_settings)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for section in ("text -> image", "image -> image", "image -> text"):
        assert section in out
    assert len(list((tmp_path / "gallery").glob("*.jpg"))) == 100
    assert len(list((tmp_path / "gallery").glob("*.png"))) == 100
    precision = float(out.split("precision@5 over these queries: ")[1].split()[0])
    assert precision >= 0.6, out
