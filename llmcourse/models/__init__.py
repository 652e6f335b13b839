"""Chapter 07: whole models, and how they generate text.

Modules in reading order:

* ``seq2seq`` - the original encoder-decoder Transformer and a small translation task;
* ``gpt`` - a decoder-only GPT in one file, weight-compatible with GPT-2;
* ``llama`` - a LLaMA-style decoder (RMSNorm, RoPE, SwiGLU, GQA), weight-compatible with ``transformers``;
* ``bert`` - a BERT encoder with its masked-LM and next-sentence heads, weight-compatible with ``transformers``;
* ``masked_lm`` - the encoder's objectives: BERT's 80/10/10 masking rule and next-sentence pairs;
* ``sampling`` - from logits to the next token: temperature, top-k, top-p;
* ``generation`` - generating token by token, with and without the KV cache;
* ``diagrams`` - conceptual diagrams: the GPT stack with its shapes, the KV cache during generation;
* ``widgets`` - the sampling explorer.
"""
