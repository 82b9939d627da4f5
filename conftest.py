"""Project-level pytest configuration.

The plugin itself is loaded through its ``pytest11`` entry point once the package is
installed (``pip install -e .``); nothing needs to be registered here.
"""
