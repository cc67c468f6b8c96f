"""`make soak`: 10 minutes of mixed image and text load (1% bad inputs) against `mmserve serve`.

    python bench/soak.py [--seconds 600] [--model-dir DIR] [--json bench/results/soak.json]

Starts `mmserve serve` on the bundled model (or --model-dir) on free loopback ports, runs `mmserve.dev.soak.soak`
over gRPC and HTTP through the front door, and prints each process's memory growth and the errors on valid
inputs. Exits 1 if any valid request failed or a bad input was accepted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from pathlib import Path

from mmserve.cpu import cpu_features
from mmserve.serving.triton.repository import build_repository
from mmserve.config import Settings
from mmserve.dev.soak import ServeProcess, soak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=600.0)
    parser.add_argument("--bad-fraction", type=float, default=0.01)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None, help="Write the report here.")
    args = parser.parse_args()

    settings = Settings(**({"model_dir": args.model_dir} if args.model_dir else {}))
    workdir = Path(tempfile.mkdtemp(prefix="mmserve-soak-"))
    repository = build_repository(settings, workdir / "repository")
    env = dict(os.environ, MMSERVE_CACHE_DIR=str(settings.cache_dir))
    print(f"soak: {args.seconds:.0f} s, {args.clients} clients, {args.bad_fraction:.0%} bad inputs, model "
          f"{settings.model_dir}; CPU features: {' '.join(cpu_features())}", flush=True)
    with ServeProcess(repository, env=env, log=workdir / "serve.log") as served:
        report = asyncio.run(soak([served.urls["grpc"], served.urls["http"]], served.process.pid, args.seconds,
                                  bad_fraction=args.bad_fraction, clients=args.clients))
    for line in report.lines():
        print(line)
    if args.json is not None:
        args.json.write_text(json.dumps(report.model_dump(), indent=2) + "\n")
    return 1 if report.valid_errors or report.bad_accepted else 0


if __name__ == "__main__":
    sys.exit(main())
