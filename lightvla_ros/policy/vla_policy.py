"""Transport-free LightVLA policy: Observation in, PolicyOutput (a whole action chunk) out.

The one boundary the ROS node, the bag replayer and the sim runner all call (STYLE.md: openpi's
`infer(observation) -> actions` with timings beside the result). No ROS and no chunk scheduling
here: executing the chunk (open loop, async, ensembling) is lightvla_ros.policy.chunking's job,
and LIBERO's gripper convention is applied by the sim runner (policy.gripper).
"""
from __future__ import annotations

import numpy as np

from lightvla_ros.model.checkpoint import load_vla
from lightvla_ros.policy.types import Observation, PolicyOutput


class VLAPolicy:
    """Loads a checkpoint directory once; `infer` runs one forward pass per observation."""

    def __init__(self, checkpoint, device: str = "auto", dtype: str = "auto", compile: bool = False,
                 center_crop: bool = True, unnorm_key: str | None = None, num_images: int | None = None,
                 platform: str | None = None, prune: bool | None = None, action_rows: str = "auto",
                 step: int | None = None, inference_path: str = "auto"):
        # action_rows: "auto" | "oft" | "lightvla", which hidden states feed the action head (docs/model.md)
        # inference_path: "auto" | "dynamic" | "static" | "graphed" (docs/model.md, static path)
        self.model = load_vla(checkpoint, device=device, dtype=dtype, compile=compile, platform=platform,
                              num_images=num_images, unnorm_key=unnorm_key, prune=prune,
                              action_rows=action_rows, step=step, inference_path=inference_path)
        self.unnorm_key = self.model.resolve_unnorm_key(unnorm_key)
        self.center_crop = bool(center_crop)
        self.num_inferences = 0
        self.warmup_report: dict = {}  # the graphed path's captures at warm-up (model.capture_graphs)

    # ---- what the transport needs to know -------------------------------------------------
    @property
    def chunk_size(self) -> int:
        return self.model.platform.chunk_size

    @property
    def action_dim(self) -> int:
        return self.model.platform.action_dim

    @property
    def proprio_dim(self) -> int:
        """Proprio values expected per observation; 0 if the checkpoint has no proprio projector."""
        return self.model.platform.proprio_dim if self.uses_proprio else 0

    @property
    def uses_proprio(self) -> bool:
        return self.model.proprio_projector is not None

    @property
    def num_images(self) -> int:
        return self.model.num_images

    @property
    def action_space(self) -> str:
        return self.model.config.get("lightvla", {}).get("action_space") or self.model.platform.action_space

    @property
    def action_rows(self) -> str:
        """The resolved action-row convention: "oft" or "lightvla"."""
        return self.model.action_rows

    @property
    def inference_path(self) -> str:
        """The resolved inference path: "dynamic", "static" or "graphed"."""
        return self.model.inference_path

    @property
    def device(self):
        return next(self.model.parameters()).device

    # ---- API ------------------------------------------------------------------------------
    def reset(self) -> None:
        """New episode. The model itself is stateless (one forward per chunk, no KV cache)."""
        self.num_inferences = 0

    def warmup(self, iterations: int = 1) -> PolicyOutput:
        """Run dummy inferences so the first real one does not pay allocation / compile / graph
        capture costs; returns the last output (the caller may check it: a broken checkpoint shows
        here). The graphed path first captures its graphs (`warmup_report`)."""
        if self.inference_path == "graphed" and not self.warmup_report:
            self.warmup_report = self.model.capture_graphs()
        images = [np.zeros((224, 224, 3), dtype=np.uint8) for _ in range(self.num_images)]
        proprio = np.zeros(self.proprio_dim, dtype=np.float32) if self.uses_proprio else None
        out = None
        for _ in range(max(1, iterations)):
            out = self.infer(Observation(images=images, instruction="warm up", proprio=proprio))
        self.num_inferences = 0
        return out

    def sequence_length(self, instruction: str) -> int:
        """LLM positions one inference with this instruction takes: BOS + prompt, visual patches
        (all, before pruning), proprio, action placeholders and STOP."""
        m = self.model
        prompt = len(m.tokenizer.prompt_ids(instruction))  # BOS included
        return (prompt + m.num_action_tokens + 1 + m.vision_backbone.num_patches * m.num_images
                + (1 if self.uses_proprio else 0))

    def instruction_problem(self, instruction: str) -> str | None:
        """Why the model cannot take this instruction (its sequence is longer than the LLM's
        positions), or None."""
        limit = int(self.model.text_config.max_position_embeddings)
        n = self.sequence_length(instruction)
        if n > limit:
            return (f"it makes a sequence of {n} positions (prompt, image patches, proprio, actions) but the "
                    f"model has {limit}")
        return None

    def infer(self, obs: Observation) -> PolicyOutput:
        self.validate(obs)
        pred = self.model.predict_action(obs.images, obs.instruction,
                                         proprio=obs.proprio if self.uses_proprio else None,
                                         unnorm_key=self.unnorm_key, center_crop=self.center_crop)
        return self._output(obs, pred)

    def infer_batch(self, observations: list[Observation]) -> list[PolicyOutput]:
        """`infer` for several observations (e.g. from several simulators) in one forward pass;
        each result equals its own `infer` within float tolerance. Timings are the batch's."""
        if not observations:
            return []
        for obs in observations:
            self.validate(obs)
        preds = self.model.predict_action_batch(
            [obs.images for obs in observations], [obs.instruction for obs in observations],
            [obs.proprio if self.uses_proprio else None for obs in observations],
            unnorm_key=self.unnorm_key, center_crop=self.center_crop)
        return [self._output(obs, pred) for obs, pred in zip(observations, preds)]

    def _output(self, obs: Observation, pred) -> PolicyOutput:
        if not np.all(np.isfinite(pred.actions)):
            raise RuntimeError(f"model produced non-finite actions (step {self.num_inferences}): "
                               f"{pred.actions.tolist()}")
        self.num_inferences += 1
        return PolicyOutput(actions=pred.actions.astype(np.float32), stamp=int(obs.stamp),
                            timings=dict(pred.timings), kept_per_image=list(pred.kept_per_image),
                            total_per_image=list(pred.total_per_image), action_space=self.action_space)

    def validate(self, obs: Observation) -> None:
        """Raise ValueError with a message saying what is wrong with `obs`."""
        if not isinstance(obs, Observation):
            raise ValueError(f"expected an Observation, got {type(obs).__name__}")
        if not isinstance(obs.images, (list, tuple)) or len(obs.images) != self.num_images:
            n = len(obs.images) if isinstance(obs.images, (list, tuple)) else type(obs.images).__name__
            raise ValueError(f"expected {self.num_images} image(s) (one per configured camera), got {n}")
        for i, image in enumerate(obs.images):
            if not isinstance(image, np.ndarray):
                raise ValueError(f"image {i}: expected a numpy array, got {type(image).__name__}")
            if image.dtype != np.uint8:
                raise ValueError(f"image {i}: expected dtype uint8 RGB, got {image.dtype}")
            if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
                raise ValueError(f"image {i}: expected shape (H, W, 3), got {image.shape}")
        if not isinstance(obs.instruction, str) or not obs.instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {obs.instruction!r}")
        if self.uses_proprio:
            if obs.proprio is None:
                raise ValueError(f"this checkpoint needs proprio ({self.proprio_dim} values), got None")
            proprio = np.asarray(obs.proprio)
            if proprio.shape != (self.proprio_dim,):
                raise ValueError(f"proprio must have shape ({self.proprio_dim},), got {proprio.shape}")
            if not np.issubdtype(proprio.dtype, np.number) or not np.all(np.isfinite(proprio)):
                raise ValueError(f"proprio must be finite numbers, got {proprio.tolist()}")
