"""Chapter 10: parallel training.

Single-process models of how training is spread over many devices:

* :mod:`llmcourse.parallel.schedule` — pipeline schedules (naive, GPipe, 1F1B) and their bubbles;
* :mod:`llmcourse.parallel.memory` — memory per device, with mixed precision and ZeRO;
* :mod:`llmcourse.parallel.communication` — how many bytes data parallelism moves per step;
* :mod:`llmcourse.parallel.loss_scaling` — fp16 underflow and (dynamic) loss scaling;
* :mod:`llmcourse.parallel.plots` — pictures of all of the above.

Real multi-process versions (several CPU processes talking through ``torch.distributed``) live in
``launch``, ``data_parallel``, ``pipeline``, ``tensor_parallel``, ``zero`` and ``recompute``.
Import the submodules you need, e.g. ``from llmcourse.parallel import schedule``.
"""
