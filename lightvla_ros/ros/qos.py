"""The package's QoS profiles, in one place (docs/interfaces.md)."""
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

SENSOR = qos_profile_sensor_data   # cameras, joint states, eef pose: best effort, keep last 5
RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)            # actions, chunks, stats
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)                  # instruction, task info
# matches any live publisher (reliable or best effort); LATCHED adds the last message of a latched one
LIVE = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)
# requests wait here until the executor takes them: a burst of 100 calls is answered, not dropped
SERVICE = QoSProfile(depth=256, reliability=ReliabilityPolicy.RELIABLE)
RECORD = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)             # recorder / bag play
