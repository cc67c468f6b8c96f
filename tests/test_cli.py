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
    """The Commands section names each command once, each with its summary; each command has --help."""
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    section = result.stdout.split("Commands:\n", 1)[1]
    listed = [line.split()[0] for line in section.splitlines() if line.startswith("  ") and line.split()]
    expected = ["build", "serve", "demo", "index", "search", "classify", "info", "api", "bench", "export", "quality",
                "embed-text", "embed-image", "deploy"]
    assert listed == expected
    for command in expected:
        sub = run_cli(command, "--help")
        assert sub.returncode == 0 and sub.stdout.startswith(f"Usage: mmserve {command} ["), (command, sub.stdout)


def test_options_and_their_help_come_from_the_configuration():
    from mmserve import __version__
    from mmserve.config import Settings

    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"mmserve {__version__}"
    serve = " ".join(run_cli("serve", "--help").stdout.split())
    for field, flag in (("max_batch_size", "--max-batch-size"), ("max_in_flight", "--max-in-flight"),
                        ("api_keys", "--api-key"), ("tls_client_ca", "--tls-client-ca")):
        description = " ".join(Settings.model_fields[field].description.split())
        assert flag in serve and description[:40] in serve and f"MMSERVE_{field.upper()}" in serve, field
    refused = run_cli("build", "--precision", "fp7")
    assert refused.returncode == 2 and "fp7" in refused.stderr


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
    for section in ("text -> image", "image -> image", "image -> text", "text -> video moment"):
        assert section in out
    assert len(list((tmp_path / "gallery").glob("*.jpg"))) == 100
    assert len(list((tmp_path / "gallery").glob("*.png"))) == 100
    precision = float(out.split("precision@5 over these queries: ")[1].split()[0])
    assert precision >= 0.6, out
    moments = out.split("== text -> video moment ==")[1].split("==")[0]
    assert moments.count(" ok ") >= 2 and "as 32 moments" in moments, out
    sounds = float(out.split("text -> sound precision@3: ")[1].split()[0])
    assert sounds >= 0.8 and "== sound -> image" in out, out


def test_serve_builds_serves_refuses_overload_and_stops_on_ctrl_c(bundled_settings, tmp_path, port_factory):
    import signal
    import time

    import mmserve

    repository = tmp_path / "repository"
    ports = {"--http-port": port_factory(), "--grpc-port": port_factory(), "--metrics-port": port_factory(),
             "--api-port": port_factory()}
    env = dict(os.environ, MMSERVE_MODEL_DIR=str(bundled_settings.model_dir),
               MMSERVE_CACHE_DIR=str(bundled_settings.cache_dir), MMSERVE_INDEX=str(tmp_path / "index"))
    # A queue of one request and a long batching window: concurrent requests overflow it at once.
    command = [sys.executable, "-m", "mmserve.cli", "serve", "--repository", str(repository),
               "--max-queue-size", "1", "--queue-delay-us", "200000", "--host", "0.0.0.0"]
    for flag, port in ports.items():
        command += [flag, str(port)]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    output = []
    try:
        for line in server.stdout:
            output.append(line)
            if line.startswith("Ctrl-C stops the server"):
                break
        text = "".join(output)
        assert f"grpc://127.0.0.1:{ports['--grpc-port']}" in text, text[-3000:]
        assert "warning: listening on 0.0.0.0 without an API key" in text
        assert (repository / "embed_image" / "config.pbtxt").is_file()
        url = f"grpc://127.0.0.1:{ports['--grpc-port']}"
        pixels = np.zeros((8, 64, 64, 3), np.uint8)
        with mmserve.Client(url, retries=0) as impatient:
            outcomes = _concurrently(lambda: impatient.embed_pixels(pixels), 12)
        assert any(isinstance(o, mmserve.OverloadedError) for o in outcomes), outcomes
        assert all(isinstance(o, (np.ndarray, mmserve.OverloadedError)) for o in outcomes), outcomes
        with mmserve.Client(url, retries=10, backoff_s=0.05) as patient:
            outcomes = _concurrently(lambda: patient.embed_pixels(pixels), 12)
            assert all(isinstance(o, np.ndarray) for o in outcomes), outcomes
            assert patient.health().ready
        # --api-port: the HTTP API in the same process, in front of the front door.
        import json
        import urllib.request

        assert f"API      http://0.0.0.0:{ports['--api-port']}" in text
        request = urllib.request.Request(f"http://127.0.0.1:{ports['--api-port']}/v1/embeddings", headers={
            "Content-Type": "application/json"}, data=json.dumps({"model": "mmserve", "input": "a red circle"}).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            assert len(json.loads(response.read())["data"][0]["embedding"]) == 128
        started = time.monotonic()
        server.send_signal(signal.SIGINT)
        rest, _ = server.communicate(timeout=60)
        assert server.returncode == 0, rest[-3000:]
        assert "tritonserver stopped" in rest
        assert time.monotonic() - started < 30
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def _concurrently(call, count):
    from concurrent.futures import ThreadPoolExecutor

    def attempt(_):
        try:
            return call()
        except Exception as error:  # noqa: BLE001 - the test inspects the outcomes
            return error

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(attempt, range(count)))
