"""Chapters 00-02: PyTorch essentials, neurons and how networks learn.

Modules in reading order:

* ``essentials`` - tensors, devices, data loading and a training loop (chapter 00);
* ``neurons`` - neurons, dense layers and the forward pass as matrix products (chapter 01);
* ``activations`` - activation functions and their derivatives (chapter 01);
* ``losses`` - one number that says how wrong a prediction is (chapter 01);
* ``neuron_plots``, ``neuron_widgets`` - chapter 01's pictures and explorers;
* ``autograd`` - a scalar autograd engine, numbers that remember how they were made (chapter 02);
* ``graph_plot`` - drawing the computation graph of ``autograd.Value`` nodes (chapter 02);
* ``gradients`` - gradients by nudging numbers and by backpropagating sensitivities (chapter 02);
* ``backprop_diagrams`` - pictures of backprop: the boxes of sensitivities, one layer as matrices (chapter 02);
* ``descent`` - gradient descent experiments: surfaces, learning rates, batches, overfitting (chapter 02);
* ``optim`` - SGD, momentum, AdaGrad, RMSProp, Adam and AdamW from scratch (chapter 02);
* ``dropout`` - dropout and its two conventions (chapter 02);
* ``descent_plots``, ``descent_widgets`` - chapter 02's pictures and learning-rate explorer.
* ``calibration`` - label smoothing, calibration (reliability bins, ECE) and temperature scaling (chapter 02);
* ``calibration_plots`` - reliability diagrams (chapter 02).

Import the modules you need, e.g. ``from llmcourse.basics import activations as act``.
"""
