"""A minute of `make soak`: mixed load with 1% bad inputs against `mmserve serve` in a process of its own."""

from __future__ import annotations

import asyncio
import os

from mmserve.dev.soak import ServeProcess, soak

# Over the 40 s after a 20 s warm-up. A leak of 1 KB per request (about 500 requests/s here) would grow a
# process by 30 MB a minute; the 10-minute soak (bench/results/soak.json) stays within 2 MB in every process.
MAX_GROWTH_MB = 12.0
MAX_SLOPE_MB_PER_MIN = 12.0


def test_a_minute_of_mixed_load_with_bad_inputs(triton_repository, bundled_settings, tmp_path):
    env = dict(os.environ, MMSERVE_CACHE_DIR=str(bundled_settings.cache_dir),
               MMSERVE_MODEL_DIR=str(bundled_settings.model_dir))
    with ServeProcess(triton_repository, env=env, log=tmp_path / "serve.log") as served:
        report = asyncio.run(soak([served.urls["grpc"], served.urls["http"]], served.process.pid, 60.0,
                                  warm_up_s=20.0))
    print("\n".join(report.lines()))
    assert report.valid_errors == 0, report.first_valid_error
    assert report.bad_requests > 50 and report.bad_accepted == 0
    names = {p.name for p in report.processes}
    assert {"supervisor", "tritonserver", "nginx master", "model embed_image", "model embed_text",
            "model image_preprocess", "model text_tokenize"} <= names, names
    assert any(name.startswith("nginx worker") for name in names)
    for process in report.processes:
        assert process.samples >= 50, process
        assert process.growth_mb < MAX_GROWTH_MB and process.slope_mb_per_min < MAX_SLOPE_MB_PER_MIN, process
