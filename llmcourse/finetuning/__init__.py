"""Chapter 09: fine-tuning and alignment.

Modules in reading order:

* ``instructions`` - the training data, generated for a small made-up world;
* ``sft`` - supervised fine-tuning with the prompt masked;
* ``classify`` - a classification head on a pretrained GPT;
* ``lora`` - low-rank adapters, injected and merged;
* ``preference`` - a reward model and direct preference optimisation (DPO);
* ``distill`` - knowledge distillation from a teacher's probabilities;
* ``diagrams`` - pictures of the training pipeline (SFT, RLHF, DPO) and of a LoRA layer.
"""
