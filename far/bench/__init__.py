"""GPU benchmarks of the fine-tuning step (``far bench``): it times and reports.

- ``cases``: what is timed (backbones, batch sizes, variants as model configs);
- ``gate``: the repository's GPU equality tests, run on the GPU before timing;
- ``timing``: the training step and its CUDA-event timer, SDPA backend choice;
- ``mfu``: FLOPs from far.complexity (the one counter), model FLOP utilisation;
- ``profiling``: GPU kernels of profiled steps (torch.profiler);
- ``memory``: what is alive at a step's peak (CUDA allocator trace);
- ``graph_breaks``: torch.compile graph breaks of a model;
- ``report``: the environment record, log lines and the result table;
- ``cli``: the command;
- ``tgi_kernels``: kernel-level timings of the TGI conv and of attention backends.
"""
