"""LightVLA = OpenVLA-OFT (vision backbone, projector, bidirectional Llama, proprio projector,
L1-regression action head) + the parameter-free TokenPruner before decoder layer 0.

The pruner runs between the embeddings and the LLM without a copy of LlamaModel.forward: we
build the multimodal embeddings ourselves, prune (embeds, position_ids, mask), and call the
LLM with inputs_embeds / position_ids / a 2-D attention mask (as LightVLA's modeling_prismatic.py does).

Two inference paths run the same stages (`inference_path`, model/static.py): `dynamic` hands the
LLM whatever length the pruner leaves; `static` pads it to a multiple of 16 (masked, exact up to
float rounding) and `graphed` replays each stage from a CUDA graph captured per length.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

from .config import ACTION_TOKEN_BEGIN_IDX, STOP_TOKEN_ID, Platform
from .errors import CheckpointError
from .heads import L1RegressionActionHead, ProprioProjector, Projector
from .preprocess import ImageTransform, images_to_pixel_values, normalize_proprio, unnormalize_actions
from .pruner import TokenPruner
from .static import (GraphedStages, bucket_length, bucket_lengths, held_memory, pad_to_bucket,
                     resolve_inference_path)
from .vision import VisionBackbone

PLACEHOLDER_TOKEN_ID = ACTION_TOKEN_BEGIN_IDX + 1  # any id works: placeholder embeddings are zeroed
PAD_TOKEN_ID = 0  # right padding of a batch: masked out of the LLM and of the pruner's task attention
WARMUP_INSTRUCTION = "warm up"
# graphs are captured at warm-up for instructions up to this many tokens longer than the warm-up one
# (LIBERO's are 8-20 tokens); a longer one is captured on its first use
WARMUP_EXTRA_PROMPT_TOKENS = 64

# Which chunk*dim rows of the LLM output feed the action head, as an offset from the placeholder
# rows (docs/model.md "Action rows"). Sequence: [BOS] [patches] [proprio] [prompt]
# [placeholders] [STOP].
#   oft:      one row BEFORE the placeholders (last prompt token + all placeholders but the last):
#             OpenVLA-OFT inference, and the training rows of both OFT and LightVLA.
#   lightvla: one row AFTER them (ending at STOP): LightVLA inference, `last_hidden_states[:, -n:]`.
ACTION_ROW_SHIFT = {"oft": -1, "lightvla": 1}
ACTION_ROWS = tuple(ACTION_ROW_SHIFT)
TRAIN_ACTION_ROWS = "oft"  # what both references train on


def resolve_action_rows(requested: str | None, recorded: str | None, prune: bool) -> str:
    """The convention to run: explicit request > the checkpoint's recorded one > by pruning.

    "auto" without a recorded value follows what each reference does with its own released
    checkpoints: LightVLA (pruning on) reads the rows ending at STOP, OpenVLA-OFT the ones before.
    """
    requested = "auto" if requested is None else str(requested).lower()
    if requested in ACTION_ROWS:
        return requested
    if requested != "auto":
        raise ValueError(f"action_rows must be auto or one of {list(ACTION_ROWS)}, got {requested!r}")
    if recorded is not None:
        if recorded not in ACTION_ROWS:
            raise ValueError(f"recorded action_rows must be one of {list(ACTION_ROWS)}, got {recorded!r}")
        return recorded
    return "lightvla" if prune else "oft"


@dataclass
class Prediction:
    """One chunk from predict_action, with its cost and what the pruner kept."""

    actions: np.ndarray  # (chunk, dim) float32, unnormalised
    normalized_actions: np.ndarray  # (chunk, dim) float32, as the head produced them
    # seconds: vision (+ projector), pruner, llm, head, forward (their sum), preprocess, total (whole call)
    timings: dict[str, float] = field(default_factory=dict)
    kept_per_image: list[int] = field(default_factory=list)
    total_per_image: list[int] = field(default_factory=list)

    @property
    def kept_total(self) -> int:
        return int(sum(self.kept_per_image))


def make_text_config(text_config: dict) -> LlamaConfig:
    """LlamaConfig with bidirectional attention (OFT's parallel decoding)."""
    config = LlamaConfig(**text_config)
    config.is_causal = False
    config._attn_implementation = "sdpa"
    return config


class LightVLA(nn.Module):
    """config: the checkpoint's config.json (dict); platform: chunk / dim / proprio constants."""

    def __init__(self, config: dict, platform: Platform, num_images: int, use_proprio: bool = True):
        super().__init__()
        self.config = config
        self.platform = platform
        ids = list(config["timm_model_ids"])
        self.vision_backbone = VisionBackbone(
            ids, list(config.get("image_sizes", [224] * len(ids))),
            timm_overrides=config.get("timm_model_kwargs"),
            act_layers=config.get("timm_override_act_layers"), num_images=num_images)
        self.text_config = make_text_config(config["text_config"])
        llm_dim = self.text_config.hidden_size
        self.projector = Projector(self.vision_backbone.embed_dim, llm_dim, fused=self.vision_backbone.use_fused)
        self.language_model = LlamaForCausalLM(self.text_config)
        for layer in self.language_model.model.layers:
            # an all-ones mask is dropped by transformers and SDPA then falls back to the
            # module's is_causal flag: make that flag bidirectional too
            layer.self_attn.is_causal = False
        self.pruner = TokenPruner(self.text_config, self.vision_backbone.num_patches * num_images)
        self.proprio_projector = ProprioProjector(llm_dim, platform.proprio_dim) if use_proprio else None
        self.action_head = L1RegressionActionHead(llm_dim, llm_dim, platform.action_dim, platform.chunk_size)
        # an option beyond the reference, recorded in config.json: the proprio token is also added to
        # every action row the head reads, a direct path from the proprio to the actions
        self.proprio_to_head = bool(config.get("lightvla", {}).get("proprio_to_head", False))
        if self.proprio_to_head and not use_proprio:
            raise ValueError("proprio_to_head needs the proprio projector (use_proprio)")
        # set by the checkpoint loader
        self.norm_stats: dict = {}
        self.tokenizer = None
        self.default_unnorm_key: str | None = None
        self._compiled: dict[str, nn.Module] = {}  # a plain dict: not registered as submodules
        # False runs plain OpenVLA-OFT (all patches), e.g. for an OFT checkpoint or a baseline
        self.prune = True
        self.action_rows = TRAIN_ACTION_ROWS  # the loader resolves it per checkpoint (resolve_action_rows)
        self.image_transform = ImageTransform(
            size=int(config.get("image_sizes", [224])[0]), norm_stats=self.vision_backbone.norm_stats())
        self.preprocessor_config: dict | None = None  # the checkpoint's preprocessor_config.json, kept for saving
        self._inference_path = "dynamic"  # set_inference_path; training always runs dynamic
        self._graphed: GraphedStages | None = None  # the graphed path's captured stages, made on first use
        self.last_llm_length = 0  # the LLM's sequence length in the last forward (with the static padding)

    # ---- geometry -------------------------------------------------------------------------
    @property
    def num_images(self) -> int:
        return self.vision_backbone.num_images

    @property
    def num_action_tokens(self) -> int:
        return self.platform.chunk_size * self.platform.action_dim

    def set_num_images_in_input(self, num_images: int) -> None:
        """The ONE place that changes the image count: backbone and pruner stay in sync."""
        self.vision_backbone.num_images = num_images
        self.pruner.num_patches = self.vision_backbone.num_patches * num_images

    def enable_compile(self, enabled: bool = True) -> None:
        """torch.compile the backbone and the LLM (dynamic shapes: the pruned length varies); False undoes it."""
        self._compiled.clear()
        if enabled:
            self._compiled["llm"] = torch.compile(self.language_model.model, dynamic=True)
            self._compiled["vision"] = torch.compile(self.vision_backbone, dynamic=True)
        self._graphed = None  # graphs hold the kernels they were captured with

    # ---- inference path (model/static.py) -------------------------------------------------
    @property
    def inference_path(self) -> str:
        """dynamic | static | graphed: what an inference (eval mode, no gradients) runs."""
        return self._inference_path

    def set_inference_path(self, path: str = "auto") -> str:
        """auto | dynamic | static | graphed -> the resolved path (auto: graphed on CUDA, dynamic on
        CPU; graphed on a CPU runs static). Drops captured graphs."""
        device = next(self.parameters()).device
        self._inference_path = resolve_inference_path(path, device, compile=bool(self._compiled))
        self._graphed = None
        return self._inference_path

    @property
    def graphs(self) -> GraphedStages | None:
        """The graphed path's stages (captured graphs, capture time, a failure that turned them off)."""
        return self._graphed

    def _stage(self, name: str, fn, *args, **static):
        """One static-path stage: replayed from its CUDA graph on the graphed path, else called."""
        if self._inference_path != "graphed":
            return fn(*args, **static)
        if self._graphed is None:
            self._graphed = GraphedStages(next(self.parameters()).device)
        return self._graphed(name, fn, *args, **static)

    def capture_graphs(self, instruction: str = WARMUP_INSTRUCTION,
                       extra_prompt_tokens: int = WARMUP_EXTRA_PROMPT_TOKENS, batch_size: int = 1) -> dict:
        """Warm-up of the graphed path: capture every stage the checkpoint can need at this batch size.

        One forward with `instruction` captures the vision, vote and head stages; then one LLM graph
        per bucket from one kept patch to all of them, pruned or not, for prompts from this one to
        `extra_prompt_tokens` longer. Returns a report: graph count, buckets, capture seconds, and
        the memory the graphs hold (reserved by the caching allocator after emptying its cache,
        before vs after: the graphs' private pool plus their input and output buffers).
        """
        if self._inference_path != "graphed":
            return {"graphs": 0, "note": f"inference path is {self._inference_path}: nothing to capture"}
        param = next(self.parameters())
        device = param.device
        t0 = time.perf_counter()
        held0 = held_memory(device)
        with torch.inference_mode():
            pixel_values = torch.zeros(batch_size, self.vision_backbone.image_channels * self.num_images,
                                       *self.vision_backbone.featurizer.patch_embed.img_size,
                                       device=device, dtype=param.dtype)
            input_ids, attention_mask = self.prompt_batch([instruction] * batch_size)
            proprio = None
            if self.proprio_projector is not None:
                proprio = torch.zeros(batch_size, self.platform.proprio_dim, device=device)
            prune, self.prune = self.prune, True  # the vote stage too, whichever way pruning is set
            try:
                self(pixel_values, input_ids, attention_mask, proprio=proprio)
            finally:
                self.prune = prune
            # the LLM stage at every length: BOS + kept patches + proprio + prompt, placeholders, STOP
            after_patches = (proprio is not None) + input_ids.shape[1] - 1
            buckets = bucket_lengths(1 + 1 + after_patches,
                                     1 + self.pruner.num_patches + after_patches + extra_prompt_tokens)
            gen = torch.Generator(device=device).manual_seed(0)
            hidden = self.text_config.hidden_size
            for length in buckets:
                tokens = torch.randn(batch_size, length, hidden, generator=gen, device=device).to(param.dtype)
                position_ids = torch.arange(length, device=device)[None].expand(batch_size, -1)
                mask = torch.ones(batch_size, length, dtype=torch.long, device=device)
                rows = torch.arange(length - self.num_action_tokens, length, device=device)[None].expand(batch_size, -1)
                self._stage("llm", self._llm_rows, tokens, position_ids, mask, rows)
        graphed = self._graphed
        return {"graphs": graphed.count, "llm_buckets": buckets, "batch_size": batch_size,
                "capture_s": round(graphed.graphs.capture_s, 3), "total_s": round(time.perf_counter() - t0, 3),
                "memory_bytes": held_memory(device) - held0, "failure": graphed.failure}

    # ---- forward --------------------------------------------------------------------------
    def _sync(self, device: torch.device) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter()

    @property
    def action_rows(self) -> str:
        return self._action_rows

    @action_rows.setter
    def action_rows(self, value: str) -> None:
        if value not in ACTION_ROWS:
            raise ValueError(f"action_rows must be one of {list(ACTION_ROWS)}, got {value!r}")
        self._action_rows = value

    def _placeholder_mask(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Default placeholders: the chunk*dim tokens right before each sample's last (STOP) token."""
        bsz, seq_len = input_ids.shape
        last = attention_mask.long().sum(dim=1) - 1  # (B,) index of STOP with right padding
        idx = torch.arange(seq_len, device=input_ids.device)[None, :]
        return (idx >= (last - self.num_action_tokens)[:, None]) & (idx < last[:, None])

    def action_row_index(self, placeholder_mask: torch.Tensor, attention_mask: torch.Tensor,
                         out_len: int) -> torch.Tensor:
        """The ONE place that picks the head's rows: (B, chunk*dim) indices into the LLM output.

        placeholder_mask / attention_mask (B, T) over the text ids; out_len: the LLM output length.
        Per sample (right padding, pruned patch counts): the pruner only shortens the patch block
        and pads it inside, so the text block is always the last T-1 output rows.
        """
        bsz, text_len = placeholder_mask.shape
        text_idx = placeholder_mask.nonzero()[:, 1].view(bsz, self.num_action_tokens)  # (B, n_act) in [0, T)
        text_idx = text_idx + ACTION_ROW_SHIFT[self.action_rows]
        if bool((text_idx < 1).any()) or bool((text_idx >= text_len).any()):
            raise ValueError(f"action rows ({self.action_rows}) fall outside the prompt + placeholders + STOP")
        if not bool(attention_mask.gather(1, text_idx).bool().all()):
            raise ValueError(f"action rows ({self.action_rows}) include padding: STOP must follow the placeholders")
        return out_len - text_len + text_idx  # text id j (j >= 1) sits at output row out_len - T + j

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                proprio: torch.Tensor | None = None, action_mask: torch.Tensor | None = None,
                timings: dict | None = None) -> torch.Tensor:
        """-> normalised action predictions (B, chunk, dim).

        pixel_values (B, C_img * num_images, H, W); input_ids / attention_mask (B, T) as
        [BOS, prompt..., chunk*dim placeholders, STOP] (right padding allowed); proprio
        (B, proprio_dim) already normalised; action_mask (B, T) bool marks the placeholders
        (default: the chunk*dim tokens before the last valid token). The head reads the rows of
        `self.action_rows` (action_row_index). In train mode the pruner keeps the length
        (straight-through votes), so an L1 loss on the output trains it. Without gradients in
        eval mode, `inference_path` static / graphed pads the LLM sequence to a bucket.
        """
        static = self._inference_path != "dynamic" and not self.training and not torch.is_grad_enabled()
        device = input_ids.device
        t0 = self._sync(device)
        if action_mask is None:
            action_mask = self._placeholder_mask(input_ids, attention_mask)
        counts = action_mask.sum(dim=1)
        if bool((counts != self.num_action_tokens).any()):
            raise ValueError(f"each sample needs {self.num_action_tokens} action positions "
                             f"({self.platform.chunk_size} x {self.platform.action_dim}), got {counts.tolist()}")
        if proprio is not None and self.proprio_projector is None:
            raise ValueError("proprio given but this checkpoint has no proprio projector")
        bsz = input_ids.shape[0]

        embeds = self.language_model.model.embed_tokens(input_ids)  # (B, T, H)
        embeds = embeds * ~action_mask[..., None]  # placeholders carry no content (OFT)
        if static:
            patches = self._stage("vision", self._visual_tokens, pixel_values, proprio)  # (B, P + 1, H)
        else:
            patches = self._visual_tokens(pixel_values, proprio)
        t1 = self._sync(device)

        # [BOS] + [patches] + [proprio] + [prompt, placeholders, STOP]
        tokens = torch.cat([embeds[:, :1], patches, embeds[:, 1:]], dim=1)  # (B, L, H)
        ones = attention_mask.new_ones(bsz, patches.shape[1])
        mask = torch.cat([attention_mask[:, :1], ones, attention_mask[:, 1:]], dim=1)  # (B, L)
        position_ids = torch.arange(tokens.shape[1], device=device)[None].expand(bsz, -1)  # (B, L)
        task_len = tokens.shape[1] - 1 - self.pruner.num_patches  # proprio + prompt, placeholders, STOP
        if self.prune:
            keep_mask = None
            if static:  # the votes in their graph; the gather's length needs the host
                task_padded = not bool(attention_mask.bool().all())
                keep_mask = self._stage("vote", self.pruner.vote, tokens, mask, task_padded=task_padded)
            tokens, position_ids, mask = self.pruner(tokens, position_ids, mask, keep_mask=keep_mask)
            self.last_keep_mask = self.pruner.last_keep_mask  # (B, P) bool
        else:
            self.last_keep_mask = torch.ones(bsz, self.pruner.num_patches, dtype=torch.bool, device=device)
        if static:  # masked padding after the patch block, up to the bucket
            tokens, position_ids, mask = pad_to_bucket(tokens, position_ids, mask, tokens.shape[1] - task_len,
                                                       bucket_length(tokens.shape[1]))
        self.last_llm_length = tokens.shape[1]
        t2 = self._sync(device)

        if static:
            rows = self.action_row_index(action_mask, attention_mask, tokens.shape[1])  # (B, n_act)
            action_hidden = self._stage("llm", self._llm_rows, tokens, position_ids, mask, rows)  # (B, n_act, H)
            t3 = self._sync(device)
            actions = self._stage("head", self.action_head, self._head_input(action_hidden, patches, proprio))
        else:
            llm = self._compiled.get("llm", self.language_model.model)
            hidden = llm(inputs_embeds=tokens, attention_mask=mask, position_ids=position_ids,
                         use_cache=False).last_hidden_state  # (B, L', H), final norm applied
            t3 = self._sync(device)
            rows = self.action_row_index(action_mask, attention_mask, hidden.shape[1])  # (B, n_act)
            action_hidden = hidden.gather(1, rows[..., None].expand(-1, -1, hidden.shape[-1]))  # (B, n_act, H)
            actions = self.action_head(self._head_input(action_hidden, patches, proprio))  # (B, chunk, dim)
        t4 = self._sync(device)
        if timings is not None:
            timings.update(vision=t1 - t0, pruner=t2 - t1, llm=t3 - t2, head=t4 - t3, total=t4 - t0)
        return actions

    def _head_input(self, action_hidden: torch.Tensor, patches: torch.Tensor,
                    proprio: torch.Tensor | None) -> torch.Tensor:
        """The head's rows (B, n_act, H); with proprio_to_head plus the proprio token (the last of
        `patches`, _visual_tokens) on every row."""
        if not self.proprio_to_head or proprio is None:
            return action_hidden
        return action_hidden + patches[:, -1:]

    def _visual_tokens(self, pixel_values: torch.Tensor, proprio: torch.Tensor | None) -> torch.Tensor:
        """pixel_values (B, C, S, S), proprio (B, proprio_dim) or None -> (B, P [+ 1], H): the projected
        patches of every camera, then the proprio token (in the task block: never pruned)."""
        vision = self._compiled.get("vision", self.vision_backbone)
        patches = self.projector(vision(pixel_values))  # (B, P, H)
        if patches.shape[1] != self.pruner.num_patches:
            raise ValueError(f"vision produced {patches.shape[1]} patches but pruner.num_patches is "
                             f"{self.pruner.num_patches}; change the image count with set_num_images_in_input()")
        if proprio is None:
            return patches
        proprio_token = self.proprio_projector(proprio.to(patches.dtype))[:, None]  # (B, 1, H)
        return torch.cat([patches, proprio_token], dim=1)

    def _llm_rows(self, tokens: torch.Tensor, position_ids: torch.Tensor, mask: torch.Tensor,
                  rows: torch.Tensor) -> torch.Tensor:
        """The static path's LLM stage: tokens (B, L, H), position_ids / mask (B, L), rows (B, n_act)
        -> the head's hidden states (B, n_act, H).

        The mask goes in 4-D (B, 1, L, L), as transformers would build it from the 2-D one: given a
        2-D mask it first checks whether any entry is 0, a host sync that a CUDA graph cannot hold.
        """
        llm = self._compiled.get("llm", self.language_model.model)
        keys = mask.bool()[:, None, None, :]  # (B, 1, 1, L): padding is never attended to
        mask4 = keys.expand(-1, -1, tokens.shape[1], -1)  # (B, 1, L, L), bidirectional
        hidden = llm(inputs_embeds=tokens, attention_mask=mask4, position_ids=position_ids,
                     use_cache=False).last_hidden_state  # (B, L, H), final norm applied
        return hidden.gather(1, rows[..., None].expand(-1, -1, hidden.shape[-1]))

    # ---- prediction -----------------------------------------------------------------------
    def resolve_unnorm_key(self, unnorm_key: str | None = None) -> str:
        key = unnorm_key if unnorm_key is not None else self.default_unnorm_key
        keys = sorted(self.norm_stats)
        if key is None:
            if len(keys) != 1:
                raise CheckpointError("several datasets in the statistics: pass unnorm_key",
                                      file="dataset_statistics.json", expected=f"one of {keys}", found=None)
            return keys[0]
        if key not in self.norm_stats:
            raise CheckpointError("unknown unnorm_key", file="dataset_statistics.json", key=key,
                                  expected=f"one of {keys}", found=key)
        return key

    def build_inputs(self, images: list[np.ndarray], instruction: str, center_crop: bool = True):
        """-> pixel_values (1, C, S, S), input_ids (1, T), attention_mask (1, T), on the model's device."""
        return self.build_batch_inputs([images], [instruction], center_crop)

    def build_batch_inputs(self, images: list[list[np.ndarray]], instructions: list[str], center_crop: bool = True):
        """One sample per (images, instruction) -> pixel_values (B, C, S, S), input_ids (B, T),
        attention_mask (B, T): prompts of different lengths are right-padded (mask 0)."""
        if self.tokenizer is None:
            raise RuntimeError("model has no tokenizer; load it with load_vla()")
        for sample in images:
            if len(sample) != self.num_images:
                raise ValueError(f"expected {self.num_images} image(s), got {len(sample)}")
        param = next(self.parameters())
        pixel_values = torch.cat([images_to_pixel_values(sample, self.image_transform, center_crop)
                                  for sample in images])  # (B, C, S, S)
        input_ids, attention_mask = self.prompt_batch(instructions)
        return pixel_values.to(param.device, param.dtype), input_ids, attention_mask

    def prompt_batch(self, instructions: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """The token layout, for serving and training alike: prompt (BOS included), action
        placeholders, STOP; right-padded -> input_ids (B, T), attention_mask (B, T)."""
        device = next(self.parameters()).device
        ids = [self.tokenizer.prompt_ids(text) + [PLACEHOLDER_TOKEN_ID] * self.num_action_tokens + [STOP_TOKEN_ID]
               for text in instructions]
        width = max(len(row) for row in ids)
        input_ids = torch.tensor([row + [PAD_TOKEN_ID] * (width - len(row)) for row in ids],
                                 dtype=torch.long, device=device)  # (B, T)
        attention_mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in ids],
                                      dtype=torch.long, device=device)  # (B, T)
        return input_ids, attention_mask

    def predict_action(self, images: list[np.ndarray], instruction: str, proprio: np.ndarray | None = None,
                       unnorm_key: str | None = None, center_crop: bool = True) -> Prediction:
        """Images (H, W, 3) uint8 per camera + instruction (+ raw proprio) -> unnormalised chunk."""
        return self.predict_action_batch([images], [instruction], [proprio], unnorm_key, center_crop)[0]

    def predict_action_batch(self, images: list[list[np.ndarray]], instructions: list[str],
                             proprios: list[np.ndarray | None] | None = None, unnorm_key: str | None = None,
                             center_crop: bool = True) -> list[Prediction]:
        """predict_action for B samples in one forward pass (the pruner keeps each sample's own
        patches); equal to B single calls within float tolerance. Timings are the batch's."""
        start = time.perf_counter()
        stats = self.norm_stats[self.resolve_unnorm_key(unnorm_key)]
        bsz = len(images)
        if len(instructions) != bsz or (proprios is not None and len(proprios) != bsz):
            raise ValueError(f"{bsz} image sets but {len(instructions)} instructions"
                             + ("" if proprios is None else f" and {len(proprios)} proprio vectors"))
        pixel_values, input_ids, attention_mask = self.build_batch_inputs(images, instructions, center_crop)
        proprio_t = None
        given = [p is not None for p in proprios] if proprios is not None else [False] * bsz
        if any(given) and self.proprio_projector is not None:
            if not all(given):
                raise ValueError("proprio must be given for every sample of a batch or for none")
            if "proprio" not in stats:
                raise CheckpointError("no proprio statistics for this dataset", file="dataset_statistics.json",
                                      key="proprio")
            p = np.stack([normalize_proprio(np.asarray(x, dtype=np.float32), stats["proprio"],
                                            self.platform.normalization) for x in proprios])
            proprio_t = torch.from_numpy(p).to(input_ids.device)  # (B, proprio_dim)
        timings: dict[str, float] = {}
        preprocess = time.perf_counter() - start
        with torch.inference_mode():
            normalized = self(pixel_values, input_ids, attention_mask, proprio=proprio_t, timings=timings)
        normalized = normalized.float().cpu().numpy()  # (B, chunk, dim)
        keep = self.last_keep_mask.view(bsz, self.num_images, -1).sum(dim=2).tolist()  # (B, num_images)
        actions = [unnormalize_actions(normalized[b], stats["action"], self.platform.normalization) for b in range(bsz)]
        # total: the whole call (preprocess + network + unnormalise), not just the forward
        timings.update(preprocess=preprocess, forward=timings["total"], total=time.perf_counter() - start)
        return [Prediction(actions=actions[b], normalized_actions=normalized[b].astype(np.float32),
                           timings=dict(timings), kept_per_image=[int(k) for k in keep[b]],
                           total_per_image=[self.vision_backbone.num_patches] * self.num_images)
                for b in range(bsz)]
