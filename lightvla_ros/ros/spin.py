"""The `main()` body shared by nodes: init, spin a MultiThreadedExecutor, stop cleanly on Ctrl-C."""
from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


def spin_node(make_node: Callable[[], Node], num_threads: int = 2, args=None) -> int:
    """Build the node after rclpy.init, spin until Ctrl-C / shutdown, destroy it; returns an exit code."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        executor = MultiThreadedExecutor(num_threads=num_threads)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
