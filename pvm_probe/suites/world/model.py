"""The tiny Qwen3-VL: the real transformers classes with a small config (~1 M parameters)."""
from __future__ import annotations

import torch
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

from .processor import PainterProcessor


def tiny_config(processor: PainterProcessor, *, hidden: int = 128, layers: int = 4) -> Qwen3VLConfig:
    """Text: hidden 128, 4 layers, 4 heads / 2 kv, head_dim 32, FFN 384, mrope [8,4,4] interleaved.
    Vision: depth 1, hidden 64, patch 16, merge 2, no deepstack -> 16 tokens per 128x128 image."""
    tok = processor.tokenizer
    ids = {n: tok.convert_tokens_to_ids(t) for n, t in [
        ("image_token_id", "<|image_pad|>"), ("video_token_id", "<|video_pad|>"),
        ("vision_start_token_id", "<|vision_start|>"), ("vision_end_token_id", "<|vision_end|>")]}
    text = dict(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=3 * hidden,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=32,
        max_position_embeddings=4096, pad_token_id=tok.pad_token_id,
        rope_parameters={"rope_type": "default", "rope_theta": 5e6,
                         "mrope_section": [8, 4, 4], "mrope_interleaved": True})
    vision = dict(
        depth=1, hidden_size=64, intermediate_size=256, num_heads=4, patch_size=16,
        spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=hidden,
        num_position_embeddings=64, deepstack_visual_indexes=[])
    cfg = Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=False, **ids)
    cfg.eos_token_id = tok.convert_tokens_to_ids("<|im_end|>")
    cfg.pad_token_id = tok.pad_token_id
    return cfg


def build_model(processor: PainterProcessor, seed: int = 0, **kw) -> Qwen3VLForConditionalGeneration:
    """Randomly initialised tiny Qwen3-VL (fp32, eager attention so attentions can be read)."""
    torch.manual_seed(seed)
    cfg = tiny_config(processor, **kw)
    cfg._attn_implementation = "eager"
    model = Qwen3VLForConditionalGeneration(cfg)
    gc = model.generation_config
    gc.eos_token_id, gc.pad_token_id = cfg.eos_token_id, cfg.pad_token_id
    gc.bos_token_id = None
    return model
