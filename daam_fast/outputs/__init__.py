"""What ``daam-fast explain`` writes: choose outputs, draw with the render kernel, encode
through well-kept libraries, write in a fixed pool of threads beside the model.

Outputs (``--outputs``, default ``overlay,maps``; ``--image-format jpg|png|webp``). One folder
per output, none per image:

=========  ============================  ==================================================
name       file                          what
=========  ============================  ==================================================
overlay    ``overlay/<stem>.jpg``        final map D_L over the picture (boxes with ``--boxes``)
maps       ``maps/*.npy``, index.json    the run's arrays, one row per input in input order:
                                         maps, block_maps, targets, logits (or features,
                                         weights), explained (:func:`load_maps`)
grid       ``grid/<stem>.jpg``           the input and D_1 ... D_L, titled
gif        ``gif/<stem>.gif``            the attention flow, one frame per block, one palette
mp4        ``mp4/<stem>.mp4``            the same at 1 frame per second (H.264)
html       ``explorer.html``             one explorer page for the run (``daam_fast.explorer``)
=========  ============================  ==================================================

Example:
    >>> from daam_fast.outputs import explain_files, load_maps
    >>> summary = explain_files(paths, model, "out", outputs="overlay,maps,gif")
    >>> maps = load_maps("out")["maps"]                # (N, L, h, w), memory-mapped
"""
from .options import OUTPUTS, ExplainOptions
from .run import explain_files
from .store import load_maps

__all__ = ["OUTPUTS", "ExplainOptions", "explain_files", "load_maps"]
