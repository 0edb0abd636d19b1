"""MP4 (H.264) encoding and decoding of frame sequences with PyAV (``pip install hoigen[diffusion]``).

Used for ``video.mp4`` (HVG-3D output) and ``tracking.mp4`` previews. Frames are (H, W, 3) uint8 RGB; frame k of
the file is frame k of the sequence (no dropped or duplicated frames: constant frame rate, every frame encoded).
Encoding is single-threaded libx264 with fixed options, fed YUV planes converted here in numpy (BT.601, limited
range, 2x2 chroma means for yuv420p: what swscale's default conversion computes, without it -- swscale's
RGB-to-YUV path gave one of two different encodings for the same frames from one call to the next) in frames whose
row padding is zeroed, with timestamps, and without x264's macroblock tree (which still did), so the same frames give
the same bytes with the same PyAV build. H.264 is lossy (``crf`` 18 by default, visually lossless): exact images
stay in the PNG members.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

DEFAULT_FPS = 8
"""CogVideoX-5B-I2V's 49 frames are a ~6 s clip at 8 fps."""


def _av():
    try:
        import av
    except ImportError as error:  # pragma: no cover - depends on the installation
        raise ImportError(
            "mp4 video needs PyAV: pip install 'hoigen[diffusion]' (or pip install av)"
        ) from error
    return av


def _check_frames(frames) -> np.ndarray:
    if isinstance(frames, np.ndarray):
        array = frames
    else:
        frames = list(frames)
        if not frames:
            raise ValueError("cannot encode an empty video: got 0 frames")
        shapes = {np.asarray(f).shape for f in frames}
        if len(shapes) != 1:
            raise ValueError(f"all video frames must have the same shape, got {sorted(shapes)}")
        array = np.stack([np.asarray(f) for f in frames])
    if array.ndim != 4 or array.shape[-1] != 3 or array.shape[0] == 0:
        raise ValueError(f"video frames must be (T, H, W, 3) RGB with T >= 1, got shape {array.shape}")
    if array.dtype != np.uint8:
        raise ValueError(f"video frames must be uint8, got {array.dtype}")
    return np.ascontiguousarray(array)


def _yuv_planes(image: np.ndarray, pix_fmt: str) -> list[np.ndarray]:
    """(H, W, 3) uint8 RGB -> its Y, U and V planes (uint8) for ``pix_fmt``: yuv420p (U and V the means of 2x2
    blocks, half size) or yuv444p (full size). BT.601, limited range."""
    rgb = image.astype(np.float64)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 16.0 + (65.481 * r + 128.553 * g + 24.966 * b) / 255.0
    u = 128.0 + (-37.797 * r - 74.203 * g + 112.0 * b) / 255.0
    v = 128.0 + (112.0 * r - 93.786 * g - 18.214 * b) / 255.0
    if pix_fmt == "yuv420p":
        h, w = y.shape
        u, v = (c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3)) for c in (u, v))
    return [np.clip(np.round(c), 0, 255).astype(np.uint8) for c in (y, u, v)]


def _video_frame(av, image: np.ndarray, pix_fmt: str):
    """An ``av.VideoFrame`` of ``image`` in ``pix_fmt`` whose rows' padding is zero (``from_ndarray`` leaves it as
    allocated, and the encoder's SIMD reads it: the same frames once encoded differently in one of 30 calls)."""
    height, width = image.shape[:2]
    frame = av.VideoFrame(width, height, pix_fmt)
    for plane, data in zip(frame.planes, _yuv_planes(image, pix_fmt)):
        rows = np.zeros((plane.height, plane.line_size), dtype=np.uint8)
        rows[: data.shape[0], : data.shape[1]] = data
        plane.update(rows)
    return frame


def encode_mp4(frames: np.ndarray | Sequence[np.ndarray], fps: int = DEFAULT_FPS, crf: int = 18) -> bytes:
    """Encode frames as an H.264 mp4.

    Args:
        frames: (T, H, W, 3) uint8 RGB, or a sequence of (H, W, 3) uint8.
        fps: frames per second (integer > 0).
        crf: x264 constant rate factor, 0 (lossless) to 51.

    Returns:
        The mp4 file's bytes (yuv420p when H and W are even, else yuv444p).
    """
    array = _check_frames(frames)
    if isinstance(fps, bool) or not isinstance(fps, int | np.integer) or fps <= 0:
        raise ValueError(f"fps must be a positive integer, got {fps!r}")
    if not 0 <= int(crf) <= 51:
        raise ValueError(f"crf must be in [0, 51], got {crf}")
    av = _av()
    _, height, width, _ = array.shape
    pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(int(fps), 1))
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        # x264's macroblock tree made the same frames encode differently in a few of 40 calls in one process
        # (measured on 48x32 test videos; none of 180 without it)
        stream.options = {"crf": str(int(crf)), "threads": "1", "preset": "medium", "x264-params": "mbtree=0"}
        stream.codec_context.thread_count = 1
        stream.codec_context.time_base = Fraction(1, int(fps))
        for t, image in enumerate(array):
            frame = _video_frame(av, image, pix_fmt)
            frame.pts, frame.time_base = t, Fraction(1, int(fps))  # x264's rate control reads the timestamps
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buffer.getvalue()


def decode_mp4(data: bytes) -> np.ndarray:
    """Decode every frame of an mp4.

    Returns:
        (T, H, W, 3) uint8 RGB.
    """
    if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
        raise ValueError("decode_mp4 needs the non-empty bytes of an mp4 file")
    av = _av()
    try:
        with av.open(io.BytesIO(bytes(data)), "r") as container:
            if not container.streams.video:
                raise ValueError("the mp4 has no video stream")
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except av.error.FFmpegError as error:
        raise ValueError(f"not a decodable mp4 video: {error}") from error
    if not frames:
        raise ValueError("the mp4 has no frames")
    return np.stack(frames)
