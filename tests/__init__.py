"""Tests for the helpers package (``from tests.conftest import make_fake_fashion_mnist``)."""
