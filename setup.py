"""ament_python setup for lightvla_ros: works with `colcon build` (also --symlink-install) and with pip.

data_files is what a colcon install puts under share/ (the ament index marker, package.xml, launch,
config, the shipped checkpoints); setup.cfg puts the console scripts in lib/lightvla_ros, where
`ros2 run` and launch_ros look. scripts/register_ament.py lays out the same for the editable pip
install in .venv (which installs no data_files). Dependencies are declared in package.xml (rosdep)
and pinned in requirements/ (pip), not here.
"""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = "lightvla_ros"
SHIPPED = sorted(d.rstrip("/").split("/")[-1] for d in glob("checkpoints/*/"))  # lightvla-lift, ...

# (console script, module:function). The node names double as `ros2 run lightvla_ros <name>`.
CONSOLE_SCRIPTS = [
    ("policy_node", "lightvla_ros.nodes.policy_node:main"),
    ("lightvla-policy", "lightvla_ros.nodes.policy_node:main"),
    ("sim_bridge_node", "lightvla_ros.nodes.sim_bridge_node:main"),
    ("lightvla-sim-bridge", "lightvla_ros.nodes.sim_bridge_node:main"),
    ("recorder_node", "lightvla_ros.nodes.recorder_node:main"),
    ("lightvla-record", "lightvla_ros.nodes.recorder_node:main"),
    ("lightvla-sim-eval", "lightvla_ros.eval.sim_eval:main"),
    ("expert_policy_node", "lightvla_ros.nodes.expert_policy_node:main"),
    ("lightvla-expert", "lightvla_ros.nodes.expert_policy_node:main"),
    ("lightvla-bag-eval", "lightvla_ros.eval.bag_eval:main"),
    ("lightvla-make-checkpoint", "lightvla_ros.model.make_checkpoint:main"),
    ("lightvla-finetune", "lightvla_ros.train.finetune:main"),
    ("lightvla-collect", "lightvla_ros.train.collect:main"),
    ("lightvla-dataset", "lightvla_ros.train.from_bags:main"),
    ("lightvla-train-recipe", "lightvla_ros.train.recipe:main"),
    ("lightvla-export", "lightvla_ros.model.make_checkpoint:export_main"),
]

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, PACKAGE + ".*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", ["resource/" + PACKAGE]),
        ("share/" + PACKAGE, ["package.xml"]),
        ("share/" + PACKAGE + "/launch", glob("launch/*.launch.py")),
        ("share/" + PACKAGE + "/config", glob("config/*.yaml")),
        *[("share/" + PACKAGE + "/checkpoints/" + name, glob(f"checkpoints/{name}/*")) for name in SHIPPED],
    ],
    zip_safe=False,
    maintainer="lightvla_ros maintainers",
    maintainer_email="maintainers@lightvla-ros.dev",
    description="LightVLA policy, sim bridge and bag evaluation for ROS 2.",
    license="MIT",
    # ray: lightvla-sim-eval --ray (docs/ray.md); the same pin as requirements/ray.txt
    extras_require={"test": ["pytest"], "ray": ["ray==2.60.0"]},
    entry_points={"console_scripts": [f"{name} = {target}" for name, target in CONSOLE_SCRIPTS]},
)
