"""Energy meters and GPU telemetry: the protocol, one module per meter, the sampler, idle power.

Nothing here imports ``pynvml``, ``zeus`` or ``torch`` at import time, and this package's
``__init__`` imports nothing at all: the plugin's entry point reaches ``energy._nvml`` to list
GPUs in every run that names a study. The libraries load when a meter opens.
"""
