"""Fixtures for tests that run ROS 2 nodes as processes (see lightvla_ros/ros/launcher.py).

Other test directories can copy these three lines: pytest only shares fixtures downwards."""
import sys
from pathlib import Path

import pytest

from lightvla_ros.ros.launcher import ros_domain

HELPER_NODES = Path(__file__).with_name("helper_nodes.py")
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def ros_dom(tmp_path):
    """A private DDS domain for one test; its processes are stopped and its shm cleaned at the end."""
    with ros_domain(log_dir=tmp_path / "ros") as dom:
        dom.env["PYTHONPATH"] = str(REPO_ROOT)  # helper scripts import lightvla_ros from this checkout
        yield dom


@pytest.fixture
def probe(ros_dom):
    """An in-test rclpy node on the test's domain."""
    with ros_dom.rclpy_node("test_probe") as p:
        yield p


@pytest.fixture
def helper_node(ros_dom):
    """start(mode, **start_node kwargs): run test/ros/helper_nodes.py <mode> as a ROS node process."""
    def start(mode, **kwargs):
        from lightvla_ros.ros.launcher import ros_args

        argv = [sys.executable, str(HELPER_NODES), mode, *ros_args(**kwargs)]
        return ros_dom.start_process(argv, name=mode)
    return start
