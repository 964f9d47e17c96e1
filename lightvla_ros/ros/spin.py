"""The one `main()` body of every lightvla_ros node: init, spin, stop within a bounded time on Ctrl-C.

Signals are ours, not rclpy's: rclpy's handler shuts the context down at once, under callbacks
still running (an inference in flight, a simulator mid-episode). Here Ctrl-C / SIGTERM raise
KeyboardInterrupt in the main thread; the node's close() stops its own threads (the policy
worker, the episode loop) and then the node is destroyed and rclpy shut down. The executor waits
at most 0.1 s at a time, so a signal is handled even while no callback or timer runs (a paused
sim clock). Node hooks, all optional: start() after construction, `done` (True: exit normally),
close() before destroy_node().

One thread (the policy node, the recorder) is rclpy's EventsExecutor where rclpy has it (Kilted;
Jazzy falls back to the SingleThreadedExecutor): it dispatches callbacks from C++ instead of
rebuilding a wait set in Python before each one, which took ~0.8 ms of the policy node's ~1 ms
camera-to-callback time and kept the inference worker waiting for the interpreter lock after each
callback (docs/benchmarks.md#policy-node). Those processes also hand the interpreter lock over
after SWITCH_INTERVAL_S instead of Python's 5 ms, so a thread woken by a callback (the inference
worker, a result coming back from the model process) runs within that, and freeze what start-up
built (gc.freeze), so a garbage collection in a callback does not walk the model's and rclpy's
objects (measured: 0.4 ms median, several ms at p90, taken out of the model process's calls).
"""
from __future__ import annotations

import gc
import os
import signal
import sys
from typing import Callable

import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.logging import get_logger
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions

SWITCH_INTERVAL_S = 0.0002   # sys.setswitchinterval of a one-thread node (Python's default: 0.005)


class StartupError(RuntimeError):
    """A configuration problem found at start-up: logged as one clear line, exit code 2."""


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM stops a node the way Ctrl-C does


def spin_node(make_node: Callable[[], Node], num_threads: int = 1, args=None, name: str = "lightvla") -> int:
    """Build the node after rclpy.init and spin it until Ctrl-C / SIGTERM / shutdown / node.done.
    num_threads 1: one_thread_executor(); more: a MultiThreadedExecutor. Returns the exit code
    (0, or 2 for a StartupError / unparsable --ros-args). Called as the process entry point
    (args None), it ends the process without the interpreter's teardown of torch & co. (~2 s)."""
    log = get_logger(name)
    code = 0
    try:
        init = rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as e:  # e.g. a malformed -p override: rcl cannot parse the arguments
        log.error(f"could not start: {type(e).__name__}: {e} (check the --ros-args)")
        return _exit(2, args)
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started with SIGINT ignored
    with init:
        node = executor = None
        try:
            node = make_node()
            if hasattr(node, "start"):
                node.start()
            gc.collect()
            gc.freeze()   # what start-up built lives as long as the node: no collection scans it again
            executor = one_thread_executor() if num_threads <= 1 else MultiThreadedExecutor(num_threads)
            if num_threads <= 1:
                sys.setswitchinterval(SWITCH_INTERVAL_S)
            executor.add_node(node)
            while rclpy.ok() and not getattr(node, "done", False):
                executor.spin_once(timeout_sec=0.1)
        except StartupError as e:
            log.error(str(e))
            code = 2
        except (ValueError, TypeError, ParameterException) as e:  # a bad parameter found while building
            log.error(f"could not start: {type(e).__name__}: {e}")
            code = 2
        except (KeyboardInterrupt, ExternalShutdownException):
            log.info("shutting down")
        finally:
            try:
                if node is not None:
                    if hasattr(node, "close"):
                        node.close()
                    if executor is not None and num_threads <= 1:   # no callback runs now: let go of the node
                        executor.shutdown(timeout_sec=1.0)
                    node.destroy_node()
            except KeyboardInterrupt:  # a second Ctrl-C while stopping: still no traceback
                pass
    if code == 0:
        log.info("stopped")
    return _exit(code, args)


def one_thread_executor():
    """rclpy's EventsExecutor (Kilted), else a SingleThreadedExecutor (Jazzy has no EventsExecutor)."""
    try:
        from rclpy.experimental import EventsExecutor
    except ImportError:
        return SingleThreadedExecutor()
    return EventsExecutor()


def _exit(code: int, args) -> int:
    if args is None:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
