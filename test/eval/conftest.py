"""Fixtures for the bag tests: the tiny policy (synthetic bags: see bagtools.py)."""
import pytest


@pytest.fixture(scope="session")
def tiny_policy(tiny_checkpoint):
    from lightvla_ros.policy.vla_policy import VLAPolicy
    return VLAPolicy(tiny_checkpoint, device="cpu", dtype="fp32")
