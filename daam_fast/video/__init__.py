"""Explain a video end to end: decode -> batch -> preprocess -> explain -> render -> encode.

The pipeline streams: a reader thread decodes frames with PyAV, batches and preprocesses them
(:func:`daam_fast.preprocess.prepare`) and hands them over through a bounded queue; the
calling thread runs the model (:class:`daam_fast.DAAM`, any of its methods);
a writer thread renders the overlays (:func:`daam_fast.render`), encodes them (H.264, or
MPEG-4 where this FFmpeg has no libx264) into an MP4 at the input's frame rate and size,
and optionally streams the maps into a maps folder (the layout of every run:
:func:`daam_fast.outputs.load_maps`), with the input's sound copied along (or re-encoded to AAC where MP4 cannot
hold its codec). Decoding and encoding overlap the model; at most ``queue_size`` batches
wait in each queue, so memory stays bounded whatever the video's length.

Nothing is lost: every decoded frame gives exactly one output frame, in order. A corrupt
or truncated input raises :class:`VideoDecodeError` naming the first frame that could not
be decoded; the frames before it are explained, encoded and the output MP4 is closed
properly (a valid, playable file) before the error is raised.

Temporal smoothing (``smoothing=s``, off by default) is an exponential moving average of
the accumulated maps over frames, applied before rendering and before the maps are
returned or written:

    S_0 = D_0,    S_t = (1 - s) * D_t + s * S_{t-1}     (every block, every patch)

``s`` in [0, 1) is the weight of the past; ``s = 0`` is off, and a frame's influence
halves every ``log(0.5) / log(s)`` frames (s = 0.5: every frame; s = 0.8: about 3 frames).
As the EMA is linear it commutes with the sum over blocks: smoothing D_b equals
accumulating the smoothed L_b.

Modules, in pipeline order: ``info`` (probe_video, VideoInfo, VideoSummary, VideoDecodeError),
``reader`` (decoding, one batch ahead in a thread), ``stream`` (explain loop, EMA), ``compose`` (panels -> frame),
``codec`` (encoder, audio), ``writer`` (encode thread),
``options`` (:class:`VideoOptions`: defaults and checks), ``api`` (:func:`explain_video`,
:func:`iter_video_maps`).

Example:
    >>> from daam_fast.video import explain_video, iter_video_maps
    >>> summary = explain_video("in.mp4", "out.mp4")            # shipped model, final map overlay
    >>> for i, maps in iter_video_maps("in.mp4"):               # tensors only: (L, h, w) per frame
    ...     pass
"""
from .api import explain_video, iter_video_maps
from .info import VideoDecodeError, VideoInfo, VideoSummary, probe_video
from .options import VideoOptions

__all__ = ["explain_video", "iter_video_maps", "probe_video", "VideoInfo", "VideoSummary", "VideoDecodeError",
           "VideoOptions"]
