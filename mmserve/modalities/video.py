"""Video in the image tower's space: frames sampled by timestamp, resized and cropped as images are, each
frame a segment of the video (its moment), the video's vector the mean of its segments' (CLIP4Clip's meanP).

Decoding is FFmpeg's, through PyAV's self-contained wheel (its bundled libavcodec: H.264, HEVC, VP8, VP9,
AV1; containers MP4/MOV, WebM/Matroska, AVI, MPEG-TS, Ogg). PyAV rather than Debian's libav* in the C++ core:
`bench/bench_video.py` measures the time of a sampled frame in PyAV's Python layer against FFmpeg's decoding
itself, and the Python layer is a small share (README, Video). One FFmpeg in the process, never two: nothing
else in mmserve links libav*.

Sampling (`VideoSampling`): one frame per second by default, at the centre of each one-second segment; a
video longer than `max_frames` seconds is cut into `max_frames` equal segments instead. Frames are found by
timestamp (WebM headers carry no frame count), seeking to the nearest keyframe before a sample that is far
ahead and decoding forward from there. With `scene_threshold`, segments follow scene changes instead: a cut
is where the mean absolute difference of two consecutive sampled thumbnails (at `scene_rate` per second)
exceeds the threshold, and each scene gives one segment (its middle frame), up to `max_frames`.

Limits (`VideoLimits`) are checked before anything large is allocated: encoded bytes first, then the
container's duration, the stream's frame size and frame rate from the headers, every decoded frame's size,
and a budget of decoded frames (a stream whose timestamps make the decoder walk through a flood of frames
is refused, not decoded). Every refusal is that item's `ItemError`.
"""

from __future__ import annotations

import dataclasses
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mmserve import _C
from mmserve.errors import ErrorCode, ItemError
from mmserve.modalities import Rows
from mmserve.modalities.image import ImageGeometry
from mmserve.models.info import ModelInfo

# Demuxers FFmpeg may pick for an upload: the usual video containers, never playlists or concat lists
# (those open further URLs).
CONTAINERS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mpegts,ogg"
# A sample further ahead than this is reached by seeking rather than decoding through.
SEEK_AHEAD_S = 2.0


class VideoRefusedError(Exception):
    """One video that cannot be embedded: its code and message."""

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclasses.dataclass(frozen=True)
class VideoLimits:
    """Per-video limits, checked before large allocations (README, Video: limits)."""

    max_encoded_bytes: int = 512 << 20
    max_seconds: float = 4 * 3600.0
    max_pixels: int = 8192 * 4320  # one frame: 8K UHD
    max_frame_rate: float = 300.0
    # Frames decoded in all (seeking lands on keyframes, so a sample may cost a GOP of decoding).
    max_decoded_frames: int = 6000


@dataclasses.dataclass(frozen=True)
class VideoSampling:
    frames_per_second: float = 1.0
    max_frames: int = 32
    scene_threshold: float | None = None  # mean absolute thumbnail difference (0-255) that marks a cut
    scene_rate: float = 4.0  # thumbnails per second compared when cutting by scene

    def __post_init__(self) -> None:
        if not (self.frames_per_second > 0 and self.max_frames >= 1 and self.scene_rate > 0):
            raise ValueError("frames_per_second and scene_rate must be positive and max_frames at least 1")

    def segments(self, duration: float) -> np.ndarray:
        """[S, 2] start and end seconds of the uniform segments of a video of `duration` seconds."""
        count = max(1, min(self.max_frames, math.ceil(duration * self.frames_per_second - 1e-9)))
        if duration * self.frames_per_second > self.max_frames:
            edges = np.linspace(0.0, duration, count + 1)
        else:
            edges = np.minimum(np.arange(count + 1) / self.frames_per_second, duration)
        return np.stack([edges[:-1], edges[1:]], axis=1)


@dataclasses.dataclass(frozen=True)
class DecodedVideo:
    pixels: np.ndarray  # uint8 [S, size, size, 3]
    times: np.ndarray  # float64 [S, 2]: each segment's start and end, seconds
    duration: float


class VideoDecoder:
    """Encoded videos to the image tower's uint8 frames, one per segment."""

    def __init__(self, geometry: ImageGeometry | ModelInfo, *, sampling: VideoSampling = VideoSampling(),
                 limits: VideoLimits = VideoLimits(), threads: int = 2) -> None:
        self.geometry = geometry
        self.sampling = sampling
        self.limits = limits
        self._pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix="mmserve-video")

    def decode_many(self, items: Sequence[bytes]) -> list[DecodedVideo | ItemError]:
        """Each video decoded (in parallel), or its error (index = its place in `items`)."""
        def one(index: int, data: bytes) -> DecodedVideo | ItemError:
            try:
                return self.decode(data)
            except VideoRefusedError as refusal:
                return ItemError(index, refusal.code, str(refusal))
            except Exception as error:  # noqa: BLE001 - a stream PyAV trips over fails alone, never the batch
                return ItemError(index, ErrorCode.CORRUPT, f"cannot decode the video ({type(error).__name__}: "
                                 f"{error})")

        return list(self._pool.map(one, range(len(items)), items))

    def decode(self, data: bytes) -> DecodedVideo:
        """One video's sampled frames; `VideoRefusedError` for what cannot be embedded."""
        import av

        limits = self.limits
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) == 0:
            raise VideoRefusedError(ErrorCode.EMPTY, "empty video")
        if len(data) > limits.max_encoded_bytes:
            raise VideoRefusedError(ErrorCode.TOO_LARGE, f"video is {len(data):,} bytes; the limit is "
                               f"{limits.max_encoded_bytes:,} (max_video_bytes)")
        try:
            container = av.open(io.BytesIO(bytes(data)), mode="r", options={"format_whitelist": CONTAINERS},
                                metadata_errors="ignore")
        except av.error.FFmpegError as error:
            if _looks_like_container(data):
                raise VideoRefusedError(ErrorCode.CORRUPT, "a damaged or truncated video file (its container cannot "
                                   f"be read: {_reason(error)})") from None
            raise VideoRefusedError(ErrorCode.UNSUPPORTED_FORMAT, "not a video container mmserve reads (MP4/MOV, "
                               f"WebM/Matroska, AVI, MPEG-TS, Ogg): {_reason(error)}") from None
        try:
            return self._decode_container(container)
        except av.error.FFmpegError as error:
            raise VideoRefusedError(ErrorCode.CORRUPT, f"corrupt video stream: {_reason(error)}") from None
        finally:
            container.close()

    def _decode_container(self, container) -> DecodedVideo:
        limits = self.limits
        if not container.streams.video:
            raise VideoRefusedError(ErrorCode.UNSUPPORTED_FORMAT, "the file has no video stream")
        stream = container.streams.video[0]
        context = stream.codec_context
        if context is None or context.codec is None:
            raise VideoRefusedError(ErrorCode.UNSUPPORTED_FORMAT, "the video codec is not one FFmpeg decodes here")
        width, height = int(context.width or 0), int(context.height or 0)
        if width <= 0 or height <= 0:
            raise VideoRefusedError(ErrorCode.INVALID, "the video stream declares no frame size")
        if width * height > limits.max_pixels:
            raise VideoRefusedError(ErrorCode.TOO_MANY_PIXELS, f"frames are {width}x{height}; the limit is "
                               f"{limits.max_pixels:,} pixels (max_video_pixels)")
        rate = stream.average_rate or stream.guessed_rate
        if rate is not None and float(rate) > limits.max_frame_rate:
            raise VideoRefusedError(ErrorCode.TOO_MANY_FRAMES, f"frame rate {float(rate):.4g}/s is over the limit "
                               f"of {limits.max_frame_rate:g}/s")
        duration = _duration(container, stream)
        if duration is not None and duration > limits.max_seconds:
            raise VideoRefusedError(ErrorCode.TOO_LONG, f"video is {_clock(duration)} long; the limit is "
                               f"{_clock(limits.max_seconds)} (max_video_seconds)")
        stream.thread_type = "AUTO"
        frames = _FrameSource(container, stream, limits, self._resize)
        if self.sampling.scene_threshold is not None:
            times, chosen = self._by_scene(frames, duration)
        else:
            times, chosen = self._uniform(frames, duration)
        return DecodedVideo(np.stack(chosen), times, float(times[-1, 1]))

    def _uniform(self, frames: _FrameSource, duration: float | None) -> tuple[np.ndarray, list[np.ndarray]]:
        if duration is None:  # no duration in the headers: decode through, then choose
            return self._stream_sampled(frames)
        planned = self.sampling.segments(duration)
        chosen: list[np.ndarray] = []
        for start, end in planned:
            frame = frames.first_at((start + end) / 2)
            if frame is None:
                break
            chosen.append(frame)
        if len(chosen) < len(planned):
            shown = frames.last_time
            if not chosen or shown < 0.9 * duration - 0.5:
                raise VideoRefusedError(ErrorCode.CORRUPT, f"truncated video: frames stop at {shown:.2f} s of the "
                                   f"{duration:.2f} s its header declares")
            chosen.extend([chosen[-1]] * (len(planned) - len(chosen)))  # the last frames sit past the end
        return planned, chosen

    def _stream_sampled(self, frames: _FrameSource) -> tuple[np.ndarray, list[np.ndarray]]:
        step = 1.0 / self.sampling.frames_per_second
        samples: list[tuple[float, np.ndarray]] = []
        while (frame := frames.first_at(len(samples) * step)) is not None:
            samples.append((frames.current_time, frame))
        if not samples:
            raise VideoRefusedError(ErrorCode.CORRUPT, "the video stream has no decodable frame")
        end = max(frames.last_time, samples[-1][0]) + 1.0 / max(frames.rate, 1.0)
        keep = np.unique(np.linspace(0, len(samples) - 1, min(len(samples), self.sampling.max_frames)).round()
                         .astype(int))
        starts = np.array([samples[i][0] for i in keep])
        times = np.stack([starts, np.append(starts[1:], end)], axis=1)
        return times, [samples[i][1] for i in keep]

    def _by_scene(self, frames: _FrameSource, duration: float | None) -> tuple[np.ndarray, list[np.ndarray]]:
        """Cut where consecutive thumbnails differ by more than the threshold; one segment per scene."""
        step = 1.0 / self.sampling.scene_rate
        samples: list[tuple[float, np.ndarray]] = []
        cuts = [0]
        previous = None
        while (frame := frames.first_at(len(samples) * step)) is not None:
            thumbnail = frame[:: max(1, frame.shape[0] // 32), :: max(1, frame.shape[1] // 32)].astype(np.int16)
            if previous is not None and np.abs(thumbnail - previous).mean() > (self.sampling.scene_threshold or 0.0):
                cuts.append(len(samples))
            previous = thumbnail
            samples.append((frames.current_time, frame))
        if not samples:
            raise VideoRefusedError(ErrorCode.CORRUPT, "the video stream has no decodable frame")
        end = duration if duration is not None else samples[-1][0] + step
        bounds = list(zip(cuts, [*cuts[1:], len(samples)]))
        if len(bounds) > self.sampling.max_frames:  # keep the longest scenes, in order
            longest = sorted(sorted(range(len(bounds)), key=lambda i: bounds[i][0] - bounds[i][1])
                             [: self.sampling.max_frames])
            bounds = [bounds[i] for i in longest]
        times = [(samples[a][0], samples[b][0] if b < len(samples) else end) for a, b in bounds]
        return np.array(times, dtype=np.float64), [samples[(a + b - 1) // 2][1] for a, b in bounds]

    def _resize(self, rgb: np.ndarray) -> np.ndarray:
        """A decoded frame to the tower's square (the image pipeline's resize and crop, in C++)."""
        geometry = self.geometry
        height, width = rgb.shape[:2]
        if geometry.resize_mode == "squash":
            size, window = (geometry.image_size, geometry.image_size), (0, 0, geometry.image_size,
                                                                        geometry.image_size)
        else:
            size, window = _C.shortest_side_center_crop(width, height, geometry.resize_shortest_edge,
                                                        geometry.image_size)
        return _C.resize_crop(rgb, size, window, filter=geometry.resample)


class _FrameSource:
    """A video stream's frames in time order, with seeking and the decoded-frame budget; each frame asked for
    comes back resized (`resize`: RGB -> the tower's square), so no full-size frame is kept."""

    def __init__(self, container, stream, limits: VideoLimits, resize) -> None:
        self.container, self.stream, self.limits, self.resize = container, stream, limits, resize
        self.decoded = 0
        self.current_time = -math.inf  # of the frame last returned
        self.last_time = 0.0  # the latest frame time seen
        rate = stream.average_rate or stream.guessed_rate
        self.rate = float(rate) if rate else 25.0
        self._frames: Iterator | None = None
        self._pending = None  # a decoded frame not yet consumed (the first one at or after a target)

    def first_at(self, target: float) -> np.ndarray | None:
        """The first frame shown at or after `target` seconds, resized (None past the end)."""
        if self._frames is None or target - max(self.current_time, self.last_time) > SEEK_AHEAD_S:
            self._seek(target)
        while True:
            frame = self._pending if self._pending is not None else self._next()
            self._pending = None
            if frame is None:
                return None
            time = frame.time if frame.time is not None else self.last_time
            self.last_time = max(self.last_time, time)
            if time + 0.5 / self.rate >= target:
                self._pending = frame  # a later target may want the same frame
                self.current_time = time
                if frame.width * frame.height > self.limits.max_pixels:
                    raise VideoRefusedError(ErrorCode.TOO_MANY_PIXELS, f"a frame is {frame.width}x{frame.height}; "
                                       f"the limit is {self.limits.max_pixels:,} pixels (max_video_pixels)")
                return self.resize(frame.to_ndarray(format="rgb24"))

    def _seek(self, target: float) -> None:
        if self._frames is not None and target > 0:
            offset = int(target / float(self.stream.time_base)) if self.stream.time_base else 0
            self.container.seek(offset + (self.stream.start_time or 0), stream=self.stream, backward=True,
                                any_frame=False)
        self._pending = None
        self._frames = self.container.decode(self.stream)

    def _next(self):
        if self._frames is None:
            return None
        frame = next(self._frames, None)
        if frame is not None:
            self.decoded += 1
            if self.decoded > self.limits.max_decoded_frames:
                raise VideoRefusedError(ErrorCode.TOO_MANY_FRAMES, f"sampling needs more than "
                                   f"{self.limits.max_decoded_frames:,} decoded frames (max_video_frames): the "
                                   "stream's frame rate or timestamps are implausible")
        return frame


class VideoModality:
    """Videos for the image tower: encoded MP4/WebM/... -> uint8 frames, one row per segment.

    A segmented modality: `decode` returns rows per segment with `item` (the video each belongs to) and
    `times` ([start, end] seconds); the model pools each video's segments (`pool_segments`)."""

    kind, encoded_input = "video", "video"
    tensor_inputs: tuple[str, ...] = ("pixels",)

    def __init__(self, decoder: VideoDecoder) -> None:
        self.decoder = decoder
        self.shape = (decoder.geometry.image_size, decoder.geometry.image_size, 3)

    def decode(self, items: Sequence[bytes]) -> tuple[Rows, list[ItemError]]:
        decoded = self.decoder.decode_many([item if isinstance(item, bytes) else b"" for item in items])
        errors = [d for d in decoded if isinstance(d, ItemError)]
        videos = [(i, d) for i, d in enumerate(decoded) if isinstance(d, DecodedVideo)]
        if not videos:
            return {"pixels": np.empty((0, *self.shape), np.uint8), "item": np.empty(0, np.int64),
                    "times": np.empty((0, 2))}, errors
        return {
            "pixels": np.concatenate([v.pixels for _, v in videos]),
            "item": np.concatenate([np.full(len(v.times), i, np.int64) for i, v in videos]),
            "times": np.concatenate([v.times for _, v in videos]),
        }, errors

    def accept(self, tensors: Mapping[str, np.ndarray]) -> tuple[Rows, list[ItemError]]:
        return {"pixels": tensors["pixels"]}, []

    def batch(self, parts: Sequence[Rows]) -> np.ndarray:
        arrays = [part["pixels"] for part in parts]
        return np.ascontiguousarray(arrays[0] if len(arrays) == 1 else np.concatenate(arrays))

    def warm_up_batches(self, max_batch_size: int) -> list[np.ndarray]:
        return [np.zeros((size, *self.shape), dtype=np.uint8) for size in sorted({1, max_batch_size})]


def _duration(container, stream) -> float | None:
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    if container.duration:
        import av

        return container.duration / av.time_base
    return None


def _looks_like_container(data: bytes) -> bool:
    """The signatures of MP4/MOV (an ftyp box), Matroska/WebM (EBML), AVI (RIFF) and Ogg."""
    head = bytes(data[:12])
    return head[4:8] == b"ftyp" or head.startswith((b"\x1a\x45\xdf\xa3", b"RIFF", b"OggS"))


def _reason(error: Exception) -> str:
    return getattr(error, "strerror", None) or str(error)


def _clock(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{seconds:.1f} s"
