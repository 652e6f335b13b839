"""Chapter 11: inference and serving, how a trained model answers many people fast.

Modules in reading order:

* ``costs`` - where generation time goes: prefill vs decode, arithmetic intensity, the roofline;
* ``paged_cache`` - the KV cache as memory to manage: fixed-size blocks, block tables, shared prefixes;
* ``batching`` - padded batched generation with attention masks, and static vs continuous batching;
* ``scheduler`` - a real scheduler: requests admitted and retired at every decode step, static or continuous;
* ``quantization`` - int8 (absmax, zero-point; per tensor, per channel) and 4-bit group-wise weights;
* ``tiled_attention`` - the online softmax, attention by tiles without the score matrix, sliding windows;
* ``speculative`` - speculative decoding: a draft model proposes, the target checks (greedy and sampled,
  with or without KV caches), and its measured speed-up;
* ``draft`` - the draft model: a one-layer GPT distilled from the course GPT, cached as an artifact;
* ``prefix_sharing`` - reusing the cache of shared prompt beginnings: a radix tree, and paged blocks;
* ``plots`` - pictures of all of the above;
* ``widgets`` - an explorer of static vs continuous batching timelines.

Import the submodules you need, e.g. ``from llmcourse.inference import paged_cache``.
"""
