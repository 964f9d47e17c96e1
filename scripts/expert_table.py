#!/usr/bin/env python3
"""Scripted-expert success table on LIBERO-Object and robosuite Lift (no ROS); see lightvla_ros.sim.expert_table."""
import sys

from lightvla_ros.sim.expert_table import main

if __name__ == "__main__":
    sys.exit(main())
