"""Memory probes shared by the tests that check memory stays flat (test_context, test_soak)."""
import gc
import warnings

import torch

from daam_fast.bench import _rss_mb as rss_mb  # noqa: F401  (resident set size, MB)


def live_tensors() -> int:
    """Number of torch.Tensor objects alive after a garbage collection."""
    gc.collect()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return sum(1 for o in gc.get_objects() if isinstance(o, torch.Tensor))
