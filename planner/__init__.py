"""Planner: a layer DAG + a GPU description -> a fusion plan.

In: a :class:`extractor.Dag` (ours, or the paper's DAG files as they are), a GPU (a name from the
built-in table, ``auto``, or the paper's ``.cfg`` format), a batch size and a dtype. Out: a
:class:`Plan`: which DW/PW layers each fused convolutional module (FCM) takes, its kind
(DW->PW, PW->DW, PW->PW, PW->DW->PW), its tiling, and the predicted bytes, launches and time
fused vs unfused; every convolution left unfused carries the reason.

- ``gpus``: GPU descriptions; ``costs``: the memory-traffic/time model and tiling search;
- ``groups``: fusion candidates from the DAG's edges; ``select``: the globally best set;
- ``plan``: ties them together, the plan JSON and the report; ``view``: the HTML rendering.

The paper's own cost model, for comparison, is outside the product: ``research/seed_model.py``.
"""

from .costs import CostConstants
from .gpus import GpuSpec, resolve as resolve_gpu
from .plan import Plan, format_report, make_plan

__all__ = ["CostConstants", "GpuSpec", "Plan", "format_report", "make_plan", "resolve_gpu"]
