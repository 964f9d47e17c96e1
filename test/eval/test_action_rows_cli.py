"""--action-rows in lightvla-sim-eval and lightvla-bag-eval: passed on, resolved, reported (no ROS needed)."""
import json

import pytest

from bagtools import write_episode
from lightvla_ros.eval import sim_eval
from lightvla_ros.eval.bag_eval import build_parser as bag_parser
from lightvla_ros.eval.bag_eval import main as bag_main
from lightvla_ros.eval.bag_eval import requested_action_rows as bag_requested
from lightvla_ros.eval.bag_play import _node_params as bag_node_params


def _sim_args(*extra):
    return sim_eval.build_parser().parse_args(list(extra))


def test_sim_eval_passes_the_node_parameter_and_reports_the_resolved_rows(tiny_checkpoint, tmp_path):
    args = _sim_args("--checkpoint", str(tiny_checkpoint), "--action-rows", "lightvla")
    _, _, exe, policy = sim_eval._node_params(args)
    assert exe == "lightvla-policy" and policy["action_rows"] == "lightvla"  # -p action_rows:=lightvla
    assert sim_eval.action_rows_report(args) == {"requested": "lightvla", "resolved": "lightvla"}
    # default: the config file's lightvla_policy action_rows, else auto (generated checkpoint: oft)
    args = _sim_args("--checkpoint", str(tiny_checkpoint))
    assert sim_eval._node_params(args)[3]["action_rows"] == "auto"
    assert sim_eval.action_rows_report(args) == {"requested": "auto", "resolved": "oft"}
    cfg = tmp_path / "sim.yaml"
    cfg.write_text("lightvla_policy:\n  ros__parameters:\n    action_rows: lightvla\n")
    args = _sim_args("--checkpoint", str(tiny_checkpoint), "--config", str(cfg))
    assert sim_eval.action_rows_report(args) == {"requested": "lightvla", "resolved": "lightvla"}
    assert sim_eval.action_rows_report(_sim_args("--policy", "expert")) is None
    with pytest.raises(SystemExit):
        _sim_args("--action-rows", "placeholders")


def test_sim_eval_gripper_postprocess_follows_the_checkpoint_unless_told(tiny_checkpoint, tmp_path):
    import shutil

    args = _sim_args("--checkpoint", str(tiny_checkpoint))  # declares nothing: the config file's (libero)
    assert "gripper_postprocess" not in sim_eval._node_params(args)[1]
    assert sim_eval.node_settings(args)[0]["gripper_postprocess"] == "libero"
    ours = shutil.copytree(tiny_checkpoint, tmp_path / "ours")  # as lightvla-finetune --statistics data writes it
    config = json.loads((ours / "config.json").read_text())
    config["lightvla"]["gripper_postprocess"] = "none"
    (ours / "config.json").write_text(json.dumps(config))
    for extra, expected in (((), "none"), (("--gripper-postprocess", "libero"), "libero")):
        args = _sim_args("--checkpoint", str(ours), *extra)
        assert sim_eval._node_params(args)[1]["gripper_postprocess"] == expected  # the bridge's -p
        assert sim_eval.node_settings(args)[0]["gripper_postprocess"] == expected  # --in-process, Ray
    with pytest.raises(SystemExit):
        _sim_args("--gripper-postprocess", "flip")


def test_bag_eval_via_ros_passes_the_node_parameter(tiny_checkpoint):
    args = bag_parser().parse_args(["x.mcap", "--checkpoint", str(tiny_checkpoint), "--via-ros",
                                    "--action-rows", "oft"])
    assert bag_node_params(args, ["/cam"], {})["action_rows"] == "oft"
    args.node_param = ["action_rows:=lightvla"]  # an explicit node parameter wins, in the report too
    assert bag_node_params(args, ["/cam"], {})["action_rows"] == "lightvla" == bag_requested(args)


def test_bag_eval_offline_runs_and_reports_the_requested_rows(tiny_checkpoint, tiny_policy, tmp_path, capsys):
    assert tiny_policy.action_rows == "oft"  # the generated checkpoint records oft
    bag = write_episode(tmp_path / "ep", "mcap", steps=2, policy=tiny_policy)
    reports = {}
    for rows in ("auto", "lightvla"):
        path = tmp_path / f"{rows}.json"
        code = bag_main([str(bag), "--checkpoint", str(tiny_checkpoint), "--report", str(path), "--no-progress",
                         "--action-rows", rows])
        assert code == 0, capsys.readouterr().err
        reports[rows] = json.loads(path.read_text())
    assert reports["auto"]["policy"]["action_rows"] == "oft"
    assert reports["lightvla"]["policy"]["action_rows"] == "lightvla"
    assert reports["lightvla"]["policy"]["action_rows_requested"] == "lightvla"
    # the bag was recorded with the oft rows: replaying with them reproduces it, the other rows do not
    assert reports["auto"]["overall"]["actions"]["max_abs_diff"] < 1e-5
    assert reports["lightvla"]["overall"]["actions"]["max_abs_diff"] > 1e-3
    assert "action rows: lightvla" in capsys.readouterr().out
