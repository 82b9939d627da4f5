"""The runner's tests use the fake NVML device of tests/energy: its fixture, shared, not copied."""

from tests.energy.conftest import fake_nvml  # noqa: F401 - importing a fixture into a conftest shares it
