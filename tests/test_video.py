"""Video: timestamp sampling, FFmpeg decoding through PyAV, limits and hostile streams, pooling, and the
served `embed_video` model (videos encoded here with libx264 and libvpx-vp9)."""

from __future__ import annotations

import numpy as np
import pytest

from mmserve.dev import synthetic
from mmserve.dev.videos import encode_video, scene_video
from mmserve.errors import ErrorCode, InvalidInputError
from mmserve.modalities import pool_segments
from mmserve.modalities.image import ImageGeometry
from mmserve.modalities.video import VideoDecoder, VideoLimits, VideoModality, VideoSampling

GEOMETRY = ImageGeometry(32, 32)
COLORS = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255]], dtype=np.uint8)


def color_video(seconds: float, *, fps: float = 10, container: str = "mp4", size: tuple[int, int] = (96, 64)):
    """Second n shows colour n % 3 (red, green, blue)."""
    height, width = size[1], size[0]
    frames = (np.broadcast_to(COLORS[int(i / fps) % 3], (height, width, 3)).copy()
              for i in range(round(seconds * fps)))
    return encode_video(frames, fps=fps, container=container)


def dominant(pixels: np.ndarray) -> list[int]:
    return [int(np.argmax(frame.reshape(-1, 3).mean(axis=0))) for frame in pixels]


@pytest.mark.parametrize("container", ["mp4", "webm"])
def test_one_frame_per_second_at_each_segment_centre(container):
    video = VideoDecoder(GEOMETRY).decode(color_video(5.0, container=container))
    assert video.times.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4], [4, 5]]
    assert dominant(video.pixels) == [0, 1, 2, 0, 1]
    assert video.pixels.shape == (5, 32, 32, 3) and video.pixels.dtype == np.uint8


def test_long_videos_get_at_most_max_frames_uniform_segments():
    video = VideoDecoder(GEOMETRY, sampling=VideoSampling(max_frames=8)).decode(color_video(24.0, fps=5))
    assert len(video.times) == 8
    np.testing.assert_allclose(video.times[:, 0], np.arange(8) * 3.0)
    assert dominant(video.pixels) == [int(1.5 + 3 * i) % 3 for i in range(8)]


def test_short_and_fractional_videos():
    decoder = VideoDecoder(GEOMETRY)
    assert decoder.decode(color_video(0.3)).times.tolist() == [[0.0, 0.3]]
    np.testing.assert_allclose(decoder.decode(color_video(2.5)).times, [[0, 1], [1, 2], [2, 2.5]])


def test_scene_changes_cut_segments():
    # Three scenes of unequal length: 1 s red, 3 s green, 2 s blue.
    frames = [COLORS[0]] * 10 + [COLORS[1]] * 30 + [COLORS[2]] * 20
    data = encode_video((np.broadcast_to(c, (64, 64, 3)).copy() for c in frames), fps=10)
    video = VideoDecoder(GEOMETRY, sampling=VideoSampling(scene_threshold=30)).decode(data)
    np.testing.assert_allclose(video.times, [[0, 1], [1, 4], [4, 6]], atol=0.13)
    assert dominant(video.pixels) == [0, 1, 2]


def test_frames_go_through_the_image_pipeline():
    """A still video's frame equals the C++ resize and crop of the decoded frame (what images get)."""
    scene = synthetic.make_scene(3)
    image = synthetic.render_scene(scene, 128)
    data = encode_video([image] * 10, fps=10)
    geometry = ImageGeometry(64, 64)
    video = VideoDecoder(geometry).decode(data)
    # libx264's 4:2:0 chroma costs a few levels on the shapes' edges; the crop and the scale are the same.
    assert np.abs(video.pixels[0].astype(int) - image[::2, ::2].astype(int)).mean() < 8


@pytest.mark.parametrize(("data", "code"), [
    (b"", ErrorCode.EMPTY),
    (b"not a video at all" * 20, ErrorCode.UNSUPPORTED_FORMAT),
])
def test_garbage_is_refused(data, code):
    with pytest.raises(Exception) as caught:
        VideoDecoder(GEOMETRY).decode(data)
    assert caught.value.code == code


def test_truncated_videos_are_refused_as_corrupt():
    whole = color_video(4.0, container="webm")
    with pytest.raises(Exception) as caught:
        VideoDecoder(GEOMETRY).decode(whole[: len(whole) // 2])
    assert caught.value.code == ErrorCode.CORRUPT
    mp4 = color_video(4.0)
    with pytest.raises(Exception) as caught:
        VideoDecoder(GEOMETRY).decode(mp4[: len(mp4) // 2])
    assert caught.value.code in (ErrorCode.CORRUPT, ErrorCode.UNSUPPORTED_FORMAT)


def test_limits_are_checked_before_decoding():
    data = color_video(6.0, size=(320, 240))
    cases = [
        (VideoLimits(max_encoded_bytes=len(data) - 1), ErrorCode.TOO_LARGE, "max_video_bytes"),
        (VideoLimits(max_seconds=5.0), ErrorCode.TOO_LONG, "max_video_seconds"),
        (VideoLimits(max_pixels=320 * 240 - 1), ErrorCode.TOO_MANY_PIXELS, "320x240"),
        (VideoLimits(max_decoded_frames=20), ErrorCode.TOO_MANY_FRAMES, "max_video_frames"),
    ]
    for limits, code, words in cases:
        with pytest.raises(Exception) as caught:
            VideoDecoder(GEOMETRY, limits=limits).decode(data)
        assert caught.value.code == code and words in str(caught.value), (limits, caught.value)


def test_absurd_frame_rates_are_refused():
    data = color_video(1.0, fps=1000)
    with pytest.raises(Exception) as caught:
        VideoDecoder(GEOMETRY).decode(data)
    assert caught.value.code == ErrorCode.TOO_MANY_FRAMES and "frame rate" in str(caught.value)


def test_a_file_without_video_is_refused():
    import io

    import av

    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="ogg") as output:
        stream = output.add_stream("libopus", rate=48000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 960), np.float32), format="flt", layout="mono")
        frame.sample_rate = 48000
        for packet in [*stream.encode(frame), *stream.encode()]:
            output.mux(packet)
    with pytest.raises(Exception) as caught:
        VideoDecoder(GEOMETRY).decode(buffer.getvalue())
    assert caught.value.code == ErrorCode.UNSUPPORTED_FORMAT and "no video stream" in str(caught.value)


def test_modality_keeps_good_videos_beside_a_bad_one():
    modality = VideoModality(VideoDecoder(GEOMETRY))
    rows, errors = modality.decode([color_video(2.0), b"junk" * 50, color_video(3.0, container="webm")])
    assert [(e.index, e.code) for e in errors] == [(1, ErrorCode.UNSUPPORTED_FORMAT)]
    assert rows["item"].tolist() == [0, 0, 2, 2, 2]
    assert rows["pixels"].shape == (5, 32, 32, 3) and rows["times"].shape == (5, 2)


def test_pooling_is_the_renormalised_mean():
    rng = np.random.default_rng(0)
    segments = rng.normal(size=(5, 8)).astype(np.float32)
    pooled = pool_segments(segments, np.array([0, 0, 1, 1, 1]), 2)
    for row, members in ((0, [0, 1]), (1, [2, 3, 4])):
        mean = segments[members].mean(axis=0)
        np.testing.assert_allclose(pooled[row], mean / np.linalg.norm(mean), rtol=1e-5)


def test_local_embedder_finds_the_moment(local_embedder):
    """Text -> video moment with the bundled model: the segment that shows the named scene scores best."""
    scenes = [synthetic.scene_with([synthetic.SceneObject(color, shape, "large", "center")], "white", seed)
              for seed, (color, shape) in enumerate([("red", "circle"), ("blue", "square"), ("green", "triangle")])]
    video, = local_embedder.embed_videos([scene_video(scenes, seconds_per_scene=2.0)])
    assert video.segments.shape == (6, local_embedder.dim)
    np.testing.assert_allclose(video.times[:, 0], np.arange(6))
    assert abs(np.linalg.norm(video.embedding) - 1) < 1e-5
    for which, text in enumerate(["a large blue square", "a large green triangle"]):
        scores = video.segments @ local_embedder.embed_texts([text])[0]
        assert int(np.argmax(scores)) // 2 == which + 1, (text, scores)


def test_served_embed_video_matches_in_process(server, local_embedder):
    import mmserve

    scenes = [synthetic.make_scene(seed) for seed in range(3)]
    data = scene_video(scenes, seconds_per_scene=1.0, container="webm")
    with mmserve.Client(server.grpc_url) as client:
        assert client.model_summary().spaces["video"] == "main"
        served, = client.embed_videos([data])
        with pytest.raises(InvalidInputError) as caught:
            client.embed_videos([data, b"\x1a\x45\xdf\xa3 broken webm"])
    local, = local_embedder.embed_videos([data])
    assert served.segments.shape == local.segments.shape == (3, local_embedder.dim)
    np.testing.assert_allclose(served.times, local.times, atol=1e-6)
    assert float(served.embedding @ local.embedding) > 0.999
    assert caught.value.index == 1 and caught.value.code == ErrorCode.CORRUPT


def test_damaged_streams_fail_alone():
    """Bit flips, overwritten runs and truncations of real files: each video decodes or gets its own error."""
    rng = np.random.default_rng(0)
    frames = [synthetic.render_scene(synthetic.make_scene(i // 10), 96) for i in range(30)]
    modality = VideoModality(VideoDecoder(GEOMETRY))
    for container in ("mp4", "webm"):
        base = np.frombuffer(encode_video(frames, fps=10, container=container), np.uint8)
        damaged = []
        for trial in range(60):
            data = base.copy()
            if trial % 3 == 0:
                data[rng.integers(0, len(data), 10)] = rng.integers(0, 256, 10)
            elif trial % 3 == 1:
                data = data[: rng.integers(16, len(data))]
            else:
                start = rng.integers(0, len(data) - 64)
                data[start : start + 64] = rng.integers(0, 256, 64)
            damaged.append(data.tobytes())
        rows, errors = modality.decode([base.tobytes(), *damaged])
        refused = {e.index for e in errors}
        assert 0 not in refused and set(rows["item"].tolist()) == set(range(61)) - refused
        # Damage in a header can also read as absurd sizes, rates or durations: refused for that, not crashed.
        assert ErrorCode.INTERNAL not in {e.code for e in errors} and all(e.message for e in errors)


def test_async_client_embeds_videos(server):
    import asyncio

    import mmserve

    data = [color_video(2.0), color_video(3.0, container="webm")]

    async def embed():
        async with mmserve.AsyncClient(server.grpc_url) as client:
            return await client.embed_videos(data)

    first, second = asyncio.run(embed())
    assert first.segments.shape[0] == 2 and second.segments.shape[0] == 3
    np.testing.assert_allclose(second.times, [[0, 1], [1, 2], [2, 3]], atol=1e-6)
