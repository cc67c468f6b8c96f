"""Real video files for tests, benchmarks and the demo, encoded here with PyAV (FFmpeg's libx264, libvpx-vp9).

`scene_video` strings synthetic scenes (`mmserve.dev.synthetic`) into one
video, each held for some seconds with a little motion, so a text query has a
known right moment ("a red circle" is on screen from 4 s to 6 s).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from mmserve.dev import synthetic

# container -> (codec, pixel format)
CODECS = {"mp4": ("libx264", "yuv420p"), "webm": ("libvpx-vp9", "yuv420p")}


def encode_video(frames: Iterable[np.ndarray], *, fps: float = 10, container: str = "mp4",
                 codec: str | None = None) -> bytes:
    """uint8 RGB frames [H, W, 3] (all one size, even sides) -> the encoded file's bytes."""
    import av

    default_codec, pixel_format = CODECS[container]
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container) as output:
        stream: av.VideoStream | None = None
        for frame in frames:
            if stream is None:
                added = output.add_stream(codec or default_codec, rate=_rate(fps))
                if not isinstance(added, av.VideoStream):
                    raise TypeError(f"{codec or default_codec} is not a video codec")
                stream = added
                stream.height, stream.width = frame.shape[:2]
                stream.pix_fmt = pixel_format
                if (codec or default_codec) == "libvpx-vp9":
                    stream.options = {"deadline": "realtime", "cpu-used": "8"}
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                output.mux(packet)
        if stream is None:
            raise ValueError("a video needs at least one frame")
        for packet in stream.encode():
            output.mux(packet)
    return buffer.getvalue()


def scene_video(scenes: Sequence[synthetic.Scene], *, seconds_per_scene: float = 2.0, fps: float = 10,
                size: int = 128, container: str = "mp4") -> bytes:
    """A video showing each scene in turn for `seconds_per_scene`, drifting by a pixel per frame."""
    def frames():
        for scene in scenes:
            image = synthetic.render_scene(scene, size)
            for step in range(round(seconds_per_scene * fps)):
                yield np.roll(image, step % 4, axis=1)

    return encode_video(frames(), fps=fps, container=container)


def write_scene_video(path: str | Path, scenes: Sequence[synthetic.Scene], **options) -> Path:
    path = Path(path)
    path.write_bytes(scene_video(scenes, container=path.suffix.lstrip(".") or "mp4", **options))
    return path


def _rate(fps: float):
    from fractions import Fraction

    return Fraction(fps).limit_denominator(1001)
