"""Prompt tokenizer: load the checkpoint's tokenizer.json, or build a Llama-compatible one locally.

Loading uses the `tokenizers` library on `tokenizer.json` directly (no transformers tokenizer
class, no remote code): the released Llama-2 tokenizer.json carries the SentencePiece-style
normaliser and byte-fallback BPE, so `encode` gives the same ids as LlamaTokenizerFast.
"""
from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, decoders, normalizers
from tokenizers.models import BPE
from tokenizers.processors import TemplateProcessing

from .config import BOS_TOKEN_ID, EMPTY_TOKEN_ID, PROMPT_TEMPLATE

LLAMA_VOCAB_SIZE = 32000  # base vocabulary; "<PAD>" is added as id 32000
SPACE = "\u2581"  # "▁", SentencePiece's word-start marker, id 29871 in Llama-2

# Words the tiny vocabulary knows as whole tokens: the prompt and LIBERO-style task words.
# Anything else still encodes (single characters, then UTF-8 byte fallback).
_WORDS = """In What action should the robot take to Out pick up and place it in the on
put push open close turn stove drawer cabinet top middle bottom bowl plate basket mug cup
black white red yellow green blue wooden cream cheese butter ketchup tomato sauce soup
alphabet milk orange juice salad dressing chocolate pudding bbq box book caddy left right
front back of into onto between next near table shelf microwave rack wine bottle frying pan
moka pots both flat",
"""


def _word_merges(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges that build `word` from its characters."""
    return [(word[:i], word[i]) for i in range(1, len(word))]


def build_llama_like_tokenizer() -> Tokenizer:
    """A byte-fallback BPE with Llama-2's special ids: <unk>=0, <s>=1, </s>=2, '▁'=29871, <PAD>=32000.

    Ids 3..258 are the byte tokens <0x00>..<0xFF> as in Llama; the range 31743..31999 (action
    placeholders in OpenVLA) holds ordinary tokens. Unused ids are filled with unreachable tokens.
    """
    vocab: dict[str, int] = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = 3 + b
    fixed = {SPACE: EMPTY_TOKEN_ID}

    def add(token: str) -> None:
        if token in vocab or token in fixed:
            return
        next_id = len(vocab)
        if next_id == EMPTY_TOKEN_ID:  # keep 29871 for '▁'
            vocab[SPACE] = EMPTY_TOKEN_ID
            next_id += 1
        vocab[token] = next_id

    for c in (chr(i) for i in range(33, 127)):
        add(c)
    merges: list[tuple[str, str]] = []
    words = sorted(set(_WORDS.split()))
    for word in [SPACE + w for w in words] + ["Out"] + [SPACE + w.capitalize() for w in words]:
        for a, b in _word_merges(word):
            if (a, b) not in merges:
                merges.append((a, b))
                add(a + b)
    i = 0
    while len(vocab) + (0 if SPACE in vocab else 1) < LLAMA_VOCAB_SIZE:
        add(f"<unused_{i}>")
        i += 1
    vocab.update(fixed)
    assert len(vocab) == LLAMA_VOCAB_SIZE and vocab[SPACE] == EMPTY_TOKEN_ID

    tok = Tokenizer(BPE(vocab=vocab, merges=merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend(SPACE), normalizers.Replace(" ", SPACE)])
    tok.decoder = decoders.Sequence([decoders.Replace(SPACE, " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.add_special_tokens(["<unk>", "<s>", "</s>", "<PAD>"])
    tok.post_processor = TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)])
    assert tok.token_to_id("<PAD>") == LLAMA_VOCAB_SIZE
    return tok


def save_tokenizer_files(tok: Tokenizer, out_dir: Path) -> None:
    """tokenizer.json + tokenizer_config.json + special_tokens_map.json, as released checkpoints ship."""
    out_dir = Path(out_dir)
    tok.save(str(out_dir / "tokenizer.json"))
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<PAD>"}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = dict(special, tokenizer_class="LlamaTokenizer", add_bos_token=True, add_eos_token=False,
                  model_max_length=2048, padding_side="right", legacy=False)
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


class PromptTokenizer:
    """Turns an instruction into OFT prompt ids: [BOS] + prompt + (29871 if missing)."""

    def __init__(self, tokenizer: Tokenizer, bos_token_id: int = BOS_TOKEN_ID):
        self.tokenizer = tokenizer
        self.bos_token_id = bos_token_id

    @classmethod
    def from_file(cls, path: Path) -> "PromptTokenizer":
        return cls(Tokenizer.from_file(str(path)))

    def prompt_ids(self, instruction: str) -> list[int]:
        if not isinstance(instruction, str) or not instruction.strip():
            raise ValueError(f"instruction must be a non-empty string, got {instruction!r}")
        prompt = PROMPT_TEMPLATE.format(task=instruction.lower())
        ids = self.tokenizer.encode(prompt, add_special_tokens=False).ids
        ids = [self.bos_token_id] + ids
        if ids[-1] != EMPTY_TOKEN_ID:  # OFT: match the inputs seen at training time
            ids.append(EMPTY_TOKEN_ID)
        return ids
