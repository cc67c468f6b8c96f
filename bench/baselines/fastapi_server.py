"""The CLIP embedding server a typical user writes from the Hugging Face docs: a baseline for mmserve.

FastAPI + uvicorn, `transformers` CLIPModel + CLIPProcessor in fp32 under `torch.inference_mode()`.
Handlers are `async def` and run the model inline, so each worker serves one request at a time
(no batching across requests), as such servers usually run.

    python bench/baselines/fastapi_server.py --model-dir DIR --port 8000 [--threads N] [--workers N]

    POST /embed/image   body: encoded image bytes (application/octet-stream) -> {"embedding": [...]}
    POST /embed/text    body: {"text": "..."}                                 -> {"embedding": [...]}
    GET  /health                                                              -> {"status": "ok"}
"""

from __future__ import annotations

import argparse
import io
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import torch
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from PIL import Image
from pydantic import BaseModel
from transformers import CLIPModel, CLIPProcessor

# Settings travel to the app through the environment because with --workers > 1 uvicorn
# imports this module afresh in each worker process.
MODEL_DIR_ENV = "CLIP_BASELINE_MODEL_DIR"
THREADS_ENV = "CLIP_BASELINE_THREADS"

clip: dict[str, Any] = {}  # the model and processor, loaded at startup


@asynccontextmanager
async def lifespan(app: FastAPI):
    torch.set_num_threads(int(os.environ.get(THREADS_ENV) or os.cpu_count() or 1))
    model_dir = os.environ[MODEL_DIR_ENV]
    # dtype is explicit: a checkpoint saved in fp16 (the bundled one) would otherwise load in fp16.
    clip["model"] = CLIPModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    clip["processor"] = CLIPProcessor.from_pretrained(model_dir)
    yield
    clip.clear()


app = FastAPI(title="CLIP baseline", lifespan=lifespan)


class TextRequest(BaseModel):
    text: str


def normalised(features: torch.Tensor) -> list[float]:
    return torch.nn.functional.normalize(features, dim=-1)[0].tolist()


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/embed/image")
async def embed_image(request: Request) -> dict[str, list[float]]:
    body = await request.body()
    try:
        image = Image.open(io.BytesIO(body)).convert("RGB")
    except (OSError, Image.DecompressionBombError):
        raise HTTPException(status_code=400, detail="the request body is not a decodable image") from None
    inputs = clip["processor"](images=image, return_tensors="pt")
    with torch.inference_mode():
        # transformers 5 returns a ModelOutput whose pooler_output holds the projected features.
        features = clip["model"].get_image_features(**inputs).pooler_output
    return {"embedding": normalised(features)}


@app.post("/embed/text")
async def embed_text(request: TextRequest) -> dict[str, list[float]]:
    inputs = clip["processor"](text=[request.text], return_tensors="pt", padding=True, truncation=True)
    with torch.inference_mode():
        features = clip["model"].get_text_features(**inputs).pooler_output
    return {"embedding": normalised(features)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="A Hugging Face CLIPModel directory.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per worker; default: all.")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn processes, each with its own model.")
    args = parser.parse_args()
    os.environ[MODEL_DIR_ENV] = str(args.model_dir.resolve())
    if args.threads is not None:
        os.environ[THREADS_ENV] = str(args.threads)
    # No access log: one line per request is noise in a benchmark and stalls the server if its
    # stdout is a pipe nobody reads.
    uvicorn.run("fastapi_server:app", app_dir=str(Path(__file__).parent), host=args.host, port=args.port,
                workers=args.workers, access_log=False)


if __name__ == "__main__":
    main()
