"""Chapter 08: pretraining a GPT.

Modules in reading order:

* ``synthetic`` - a synthetic corpus whose best possible loss is known exactly;
* ``data`` - windows, batches, epochs and corpora;
* ``schedules`` - linear warmup, then cosine decay;
* ``plain_loop`` - the training loop in thirty plain lines, before the Trainer;
* ``trainer`` - the training loop (``Trainer``, ``TrainConfig``), on top of accelerate;
* ``checkpoint`` - saving and loading checkpoints safely;
* ``estimates`` - FLOPs, memory, throughput and MFU;
* ``plots`` - loss curves, live while training;
* ``trained_attention`` - where a trained GPT's heads look, by distance back;
* ``course_model`` - the course's GPT pretrained with the course's tokenizer, cached for chapters 09 and 10;
* ``ngram`` - the counting models that came before: n-grams with add-k smoothing and interpolation;
* ``evaluation`` - held-out loss per token, bits per byte, multiple-choice scoring;
* ``encoder_pretraining`` - chapter 07's BERT-style encoder trained on the course's data next to a GPT, and both
  filling the same blanks;
* ``diagrams`` - pictures of a window's input/target shift and of gradient accumulation.
"""
