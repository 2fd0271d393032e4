"""Model configs: tiny random models of the real classes (tests, demos) and real Qwen3-VL shapes.

Nothing here downloads anything. `tiny_model(arch)` builds a few-hundred-k-parameter model of the
real `transformers` class; `fake_request` builds the inputs its processor would produce for random
images (image placeholder tokens, pixel values, grids, left padding); `save_tiny_checkpoint(arch, dir)`
writes a tiny random model plus a locally built processor as a local Hugging Face directory, laid out
like a real checkpoint, so `--base DIR` can be exercised end to end.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import (
    AutoConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava.processing_llava import LlavaProcessor
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from .suites.world.processor import CHAT_TEMPLATE, chat_template

VOCAB = 128
IMAGE_TOKEN, VIDEO_TOKEN, VISION_START, VISION_END, PAD = 120, 121, 122, 123, 0

# Qwen3-VL-8B / -4B shapes (text model as released; vision tower as released).
_QWEN3_VL_TEXT = dict(
    vocab_size=151936, num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
    rms_norm_eps=1e-6, max_position_embeddings=262144,
    rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0, "mrope_section": [24, 20, 20],
                     "mrope_interleaved": True},
)
REAL_SHAPES = {
    "qwen3-vl-8b": dict(
        text=dict(hidden_size=4096, intermediate_size=12288, **_QWEN3_VL_TEXT),
        vision=dict(depth=27, hidden_size=1152, intermediate_size=4304, num_heads=16, out_hidden_size=4096,
                    deepstack_visual_indexes=[8, 16, 24]),
        tie_word_embeddings=False,
    ),
    "qwen3-vl-4b": dict(
        text=dict(hidden_size=2560, intermediate_size=9728, **_QWEN3_VL_TEXT),
        vision=dict(depth=24, hidden_size=1024, intermediate_size=4096, num_heads=16, out_hidden_size=2560,
                    deepstack_visual_indexes=[5, 11, 17]),
        tie_word_embeddings=True,
    ),
}


def qwen3_vl_config(size: str = "qwen3-vl-8b") -> Qwen3VLConfig:
    """The real Qwen3-VL config for a released size (build the model on the meta device)."""
    shape = REAL_SHAPES[size]
    return Qwen3VLConfig(text_config=shape["text"], vision_config=shape["vision"],
                         tie_word_embeddings=shape["tie_word_embeddings"])


def _tiny_text(**extra) -> dict:
    return dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                pad_token_id=PAD, bos_token_id=1, eos_token_id=2, **extra)


def tiny_config(arch: str = "qwen3_vl"):
    if arch == "qwen3_vl":
        return Qwen3VLConfig(
            text_config=_tiny_text(head_dim=16, rope_parameters={
                "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2], "mrope_interleaved": True}),
            vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8,
                               out_hidden_size=64, num_position_embeddings=64, deepstack_visual_indexes=[]),
            image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN,
            vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
        )
    if arch == "qwen2_5_vl":
        return Qwen2_5_VLConfig(
            text_config=_tiny_text(rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                    "mrope_section": [4, 2, 2]}),
            vision_config=dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=8,
                               out_hidden_size=64, window_size=16, fullatt_block_indexes=[0]),
            image_token_id=IMAGE_TOKEN, video_token_id=VIDEO_TOKEN,
            vision_start_token_id=VISION_START, vision_end_token_id=VISION_END,
        )
    if arch == "llava":
        text = AutoConfig.for_model("llama", **_tiny_text())
        vision = AutoConfig.for_model("clip_vision_model", hidden_size=32, intermediate_size=64,
                                      num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8,
                                      projection_dim=32)
        return LlavaConfig(text_config=text, vision_config=vision, image_token_id=IMAGE_TOKEN,
                           vision_feature_layer=-1, projector_hidden_act="gelu")
    raise ValueError(f"unknown tiny architecture {arch!r}; known: qwen3_vl, qwen2_5_vl, llava")


_CLASSES = {
    "qwen3_vl": Qwen3VLForConditionalGeneration,
    "qwen2_5_vl": Qwen2_5_VLForConditionalGeneration,
    "llava": LlavaForConditionalGeneration,
}
ARCHS = tuple(_CLASSES)


def tiny_model(arch: str = "qwen3_vl", seed: int = 0, attn: str = "eager", dtype=torch.float32):
    torch.manual_seed(seed)
    config = tiny_config(arch)
    config._attn_implementation = attn
    return _CLASSES[arch](config).to(dtype).eval()


@dataclass
class Image:
    """A fake image given by its patch grid: Qwen grids are (1, h, w) in patches; LLaVA is fixed-size."""

    grid_h: int = 4
    grid_w: int = 4


def _qwen_image(model, image: Image, generator) -> tuple[torch.Tensor, list[int], int]:
    vision = model.config.vision_config
    patch_dim = vision.in_channels * vision.temporal_patch_size * vision.patch_size**2
    pixels = torch.randn(image.grid_h * image.grid_w, patch_dim, generator=generator)  # [P, C*t*p*p]
    n_tokens = image.grid_h * image.grid_w // vision.spatial_merge_size**2
    return pixels, [1, image.grid_h, image.grid_w], n_tokens


def _llava_image(model, generator) -> tuple[torch.Tensor, int]:
    vision = model.config.vision_config
    pixels = torch.randn(1, 3, vision.image_size, vision.image_size, generator=generator)  # [1, 3, H, W]
    return pixels, (vision.image_size // vision.patch_size) ** 2


def fake_request(model, images: list[Image | None], prompt_len: int = 6, seed: int = 0, image_at: int = 2) -> dict:
    """Left-padded inputs for one request per entry of `images` (None = text only); each image
    follows the first `image_at` text tokens."""
    g = torch.Generator().manual_seed(seed)  # text
    pixel_g = torch.Generator().manual_seed(seed + 1)  # pixels: the same images whatever the text length
    is_llava = isinstance(model, LlavaForConditionalGeneration)
    rows, pixels, grids, types = [], [], [], []
    for image in images:
        text = torch.randint(1, 100, (prompt_len,), generator=g).tolist()
        if image is None:
            rows.append(text)
            types.append([0] * len(text))
            continue
        if is_llava:
            pix, n = _llava_image(model, pixel_g)
            ids = [IMAGE_TOKEN] * n
        else:
            pix, grid, n = _qwen_image(model, image, pixel_g)
            grids.append(grid)
            ids = [VISION_START] + [IMAGE_TOKEN] * n + [VISION_END]
        pixels.append(pix)
        rows.append(text[:image_at] + ids + text[image_at:])
        types.append([0] * image_at + [1 if t == IMAGE_TOKEN else 0 for t in ids] + [0] * (len(text) - image_at))
    width = max(map(len, rows))
    batch = {
        "input_ids": torch.tensor([[PAD] * (width - len(r)) + r for r in rows]),
        "attention_mask": torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows]),
    }
    if pixels:
        batch["pixel_values"] = torch.cat(pixels)
    if grids:
        batch["image_grid_thw"] = torch.tensor(grids)
    if not is_llava:
        batch["mm_token_type_ids"] = torch.tensor([[0] * (width - len(t)) + t for t in types])
    return batch


# ---- tiny checkpoints on disk ----------------------------------------------------------------------
_QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                  "<|image_pad|>", "<|video_pad|>", "<unk>"]
_LLAVA_SPECIALS = ["<pad>", "<s>", "</s>", "<image>", "<unk>"]
_PROCESSOR_CLASS = {"qwen3_vl": "Qwen3VLProcessor", "qwen2_5_vl": "Qwen2_5_VLProcessor", "llava": "LlavaProcessor"}
_TINY_IMAGE_PX = 64  # Qwen: every image resized to ~64x64 -> 8x8 patches of 8 px -> 16 merged tokens


def tiny_tokenizer(arch: str, words) -> PreTrainedTokenizerFast:
    """Word-level tokenizer (whitespace split): the backbone's special tokens, then `words`."""
    specials = _LLAVA_SPECIALS + ["<|im_start|>"] if arch == "llava" else _QWEN_SPECIALS
    vocab = {t: i for i, t in enumerate(dict.fromkeys([*specials, "user", "assistant", *words]))}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    if arch == "llava":
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                      unk_token="<unk>", extra_special_tokens=["<image>", "<|im_start|>"])
        tok.chat_template = chat_template("<image>", "</s>")
    else:
        tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<|endoftext|>", eos_token="<|im_end|>",
                                      unk_token="<unk>", extra_special_tokens=_QWEN_SPECIALS[1:7])
        tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


def _tiny_image_processor(arch: str):
    if arch == "llava":
        side = tiny_config("llava").vision_config.image_size
        return CLIPImageProcessorPil(size={"shortest_edge": side}, crop_size={"height": side, "width": side})
    pixels = _TINY_IMAGE_PX * _TINY_IMAGE_PX
    return Qwen2VLImageProcessorPil(patch_size=8, merge_size=2, temporal_patch_size=2,
                                    size={"shortest_edge": pixels, "longest_edge": pixels})


def _config_for_tokenizer(arch: str, tok: PreTrainedTokenizerFast):
    """tiny_config(arch) with the vocabulary and special-token ids of `tok`."""
    config = tiny_config(arch)
    text = config.get_text_config()
    text.vocab_size = len(tok)
    text.pad_token_id, text.eos_token_id, text.bos_token_id = tok.pad_token_id, tok.eos_token_id, tok.bos_token_id
    names = {"image_token_id": "<image>"} if arch == "llava" else {
        "image_token_id": "<|image_pad|>", "video_token_id": "<|video_pad|>",
        "vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}
    for attr, token in names.items():
        setattr(config, attr, tok.convert_tokens_to_ids(token))
    return config


def _save_processor(arch: str, tok: PreTrainedTokenizerFast, directory: Path) -> None:
    """Processor files as a real checkpoint ships them. Qwen processors cannot be built without a video
    processor (torchvision), so their parts are saved one by one and named by `processor_class`."""
    image_processor = _tiny_image_processor(arch)
    if arch == "llava":
        vision = tiny_config("llava").vision_config
        LlavaProcessor(image_processor, tok, patch_size=vision.patch_size, vision_feature_select_strategy="default",
                       num_additional_image_tokens=1, chat_template=tok.chat_template).save_pretrained(directory)
        return
    tok.save_pretrained(directory)
    image_processor.save_pretrained(directory)
    config_path = directory / "preprocessor_config.json"
    config = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**config, "processor_class": _PROCESSOR_CLASS[arch]}, indent=2))


def save_tiny_checkpoint(arch: str, directory, words=(), seed: int = 0) -> Path:
    """Write a tiny random `arch` model and its processor to `directory` (a local HF checkpoint).

    words: the tokenizer's vocabulary besides the special tokens (decoded random output is made of them)."""
    directory = Path(directory)
    tok = tiny_tokenizer(arch, words)
    torch.manual_seed(seed)
    model = _CLASSES[arch](_config_for_tokenizer(arch, tok)).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(directory)
    _save_processor(arch, tok, directory)
    return directory
