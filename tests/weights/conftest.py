"""Fixtures of the weights tests: the local HTTP server standing in for download sources."""

from weights_server import weights_server  # noqa: F401 - the fixture
