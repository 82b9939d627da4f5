"""vLLM as a machine without it sees it: importing it fails as a missing package does.

Put first on the path by tests of what a missing engine does, so they hold on a machine where
the real vLLM is installed too.
"""

raise ModuleNotFoundError("No module named 'vllm'", name="vllm")
