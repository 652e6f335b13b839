"""Chapter 10: parallel training.

Modules in reading order. Single-process models of how training is spread over many devices:

* ``schedule`` - pipeline schedules (naive, GPipe, 1F1B) and their bubbles;
* ``interleaved`` - interleaved 1F1B: several chunks of layers per device, a bubble v times smaller;
* ``weight_stashing`` - PipeDream's asynchronous 1F1B: which weight version each micro-batch uses;
* ``memory`` - memory per device, with mixed precision and ZeRO;
* ``communication`` - how many bytes data parallelism moves per step;
* ``loss_scaling`` - fp16 underflow and (dynamic) loss scaling;
* ``plots`` - pictures of all of the above;
* ``diagrams`` - device layouts of data, tensor and pipeline parallelism.

Real multi-process versions (several CPU processes talking through ``torch.distributed``):

* ``launch`` - starting processes from a script or a notebook, with clear errors instead of hangs;
* ``data_parallel`` - averaging gradients by hand, and with DDP;
* ``pipeline`` - GPipe and 1F1B over send/recv;
* ``tensor_parallel`` - column- and row-parallel MLPs, and attention split by heads;
* ``zero`` - ZeRO-1, optimizer state sharded over processes;
* ``recompute`` - activation recomputation (checkpointing);
* ``demo`` - every scheme as one program for ``torchrun``.
* ``course_gpt`` - chapter 08's GPT and Trainer in several processes: the per-process settings, the windows
  each process reads, and how close the runs' losses stay.

Import the submodules you need, e.g. ``from llmcourse.parallel import schedule``.
"""
