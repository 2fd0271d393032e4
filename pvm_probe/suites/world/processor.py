"""Tokenizer and processor of the painter world, built locally (no hub, no torchvision).

``Qwen3VLProcessor`` insists on a video processor, which imports torchvision. The
``PainterProcessor`` below is the same class with the video slot removed (attributes:
image_processor = transformers' ``Qwen2VLImageProcessorPil``, tokenizer = a word-level
``PreTrainedTokenizerFast``). It produces the keys the real processor does:
input_ids, attention_mask, pixel_values, image_grid_thw, mm_token_type_ids.
Importing ``pvm_probe.suites.world`` registers it, so ``AutoProcessor.from_pretrained(dir)``
works.
"""
from __future__ import annotations

from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoProcessor, PretrainedConfig, PreTrainedTokenizerFast
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from ...processors import ImageOnlyQwenProcessor
from .scenes import IMAGE_PX
from .task import vocabulary

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
            "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def chat_template(image: str, end: str) -> str:
    """A ChatML-like template; each image content item becomes `image` (the placeholder run), each turn
    ends with `end`."""
    return (
        "{% for m in messages %}<|im_start|> {{ m['role'] }} "
        "{% if m['content'] is string %}{{ m['content'] }} {% else %}{% for c in m['content'] %}"
        f"{{% if c['type'] == 'image' %}}{image} {{% else %}}{{{{ c['text'] }}}} {{% endif %}}{{% endfor %}}{{% endif %}}"
        f"{end} {{% endfor %}}{{% if add_generation_prompt %}}<|im_start|> assistant {{% endif %}}"
    )


CHAT_TEMPLATE = chat_template("<|vision_start|><|image_pad|><|vision_end|>", "<|im_end|>")


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Word-level tokenizer: Qwen special tokens first, then the world's words."""
    vocab = {t: i for i, t in enumerate(SPECIALS + vocabulary())}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<|endoftext|>", unk_token="<|endoftext|>",
        eos_token="<|im_end|>", extra_special_tokens=SPECIALS[1:], padding_side="left")
    tok.chat_template = CHAT_TEMPLATE
    return tok


def build_image_processor() -> Qwen2VLImageProcessorPil:
    """Qwen2-VL PIL image processor fixed at 128x128 -> grid [1, 8, 8] -> 16 merged tokens."""
    px = IMAGE_PX * IMAGE_PX
    return Qwen2VLImageProcessorPil(
        patch_size=16, merge_size=2, temporal_patch_size=2, image_mean=[0.5] * 3,
        image_std=[0.5] * 3, size={"shortest_edge": px, "longest_edge": px})


class PainterProcessor(ImageOnlyQwenProcessor):
    """The painter world's processor: the image-only Qwen processor, under the name its saved config uses."""


class _PainterKey(PretrainedConfig):
    """Registry key only: lets AutoProcessor find PainterProcessor by name."""
    model_type = "pvm_painter_processor"


try:
    AutoProcessor.register(_PainterKey, PainterProcessor)
except ValueError:  # already registered (module reloaded)
    pass


def build_processor() -> PainterProcessor:
    """Fresh tokenizer + image processor + chat template."""
    return PainterProcessor(build_image_processor(), build_tokenizer(), chat_template=CHAT_TEMPLATE)
