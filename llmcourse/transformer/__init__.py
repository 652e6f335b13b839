"""Chapters 04-06: the parts of a Transformer.

Modules in reading order:

* ``embeddings`` - from token ids to vectors (chapter 04);
* ``positions`` - sinusoidal, learned, rotary (RoPE) and ALiBi positions (chapter 04);
* ``embedding_diagrams`` - chapter 04's conceptual diagrams: an embedding lookup, RoPE as a rotation;
* ``attention`` - scores, scaling, masks, heads, GQA and the KV cache (chapter 05);
* ``sequence_timing`` - why attention trains in parallel and an RNN cannot (chapter 05);
* ``recurrent_and_conv`` - an LSTM's gates, a causal convolution, and what each layer costs (chapter 05);
* ``sequence_models`` - a tiny LSTM and attention model trained on raw text; one pass vs generation (chapter 05);
* ``attention_plots``, ``attention_widgets`` - pictures and explorers of chapters 04 and 05;
* ``attention_diagrams`` - chapter 05's conceptual diagrams: one head, heads split and merged, GQA;
* ``norms`` - LayerNorm and RMSNorm (chapter 06);
* ``feedforward`` - position-wise feed-forward networks (chapter 06);
* ``block`` - the Transformer block: attention and feed-forward on a residual stream (chapter 06);
* ``moe`` - mixture of experts and its router (chapter 06);
* ``moe_practice`` - shared experts, expert capacity and dropped tokens, what trained experts take (chapter 06);
* ``counting`` - parameters and FLOPs, part by part (chapter 06);
* ``block_diagrams`` - chapter 06's conceptual diagrams: the residual stream, pre-norm vs post-norm;
* ``block_plots``, ``block_widgets`` - chapter 06's pictures and block explorer.
"""
