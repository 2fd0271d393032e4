"""The processor of a local checkpoint, with a torchvision-free route for Qwen-VL models.

`AutoProcessor.from_pretrained(dir)` is tried first (never `trust_remote_code`). Qwen3-VL and Qwen2.5-VL
processors insist on a video processor, which imports torchvision; when that import is what fails, the
processor is rebuilt from the directory's image processor (transformers' PIL backend,
`Qwen2VLImageProcessorPil`), its tokenizer and its chat template, as an `ImageOnlyQwenProcessor` (a
Qwen3VLProcessor without the video slot: the same image inputs for both Qwen generations). LLaVA
processors have no video slot and load as they are.
"""

from __future__ import annotations

import json
from pathlib import Path

from transformers import AutoProcessor, AutoTokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor
from transformers.processing_utils import ProcessorMixin

from .errors import InputError

IMAGE_PROCESSOR_FILES = ("preprocessor_config.json", "processor_config.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
QWEN_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


class ImageOnlyQwenProcessor(Qwen3VLProcessor):
    """Qwen3VLProcessor without the video slot (so no torchvision): image processor, tokenizer, chat template."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)
        self.vision_start_token, self.vision_end_token = "<|vision_start|>", "<|vision_end|>"
        self.vision_start_token_id = tokenizer.convert_tokens_to_ids(self.vision_start_token)
        self.vision_end_token_id = tokenizer.convert_tokens_to_ids(self.vision_end_token)


def load_processor(directory):
    """The checkpoint's processor, left-padding; one-line errors for missing files or chat template."""
    directory = Path(directory)
    _check_processor_files(directory)
    try:
        processor = AutoProcessor.from_pretrained(directory, local_files_only=True)
    except ImportError as err:
        if "torchvision" not in str(err).lower() or _model_type(directory) not in QWEN_MODEL_TYPES:
            raise
        processor = image_only_qwen_processor(directory)
    if not getattr(processor, "chat_template", None):
        raise InputError(f"{directory} has no chat template (chat_template.jinja/.json or in tokenizer_config.json): "
                         "the suites need an instruction-tuned checkpoint")
    processor.tokenizer.padding_side = "left"
    return processor


def image_only_qwen_processor(directory) -> ImageOnlyQwenProcessor:
    """Qwen-VL processor without the video processor: PIL image processor + tokenizer + chat template."""
    directory = Path(directory)
    image_processor = Qwen2VLImageProcessorPil(**_image_processor_config(directory))
    tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
    return ImageOnlyQwenProcessor(image_processor, tokenizer, chat_template=_chat_template(directory, tokenizer))


def _check_processor_files(directory: Path) -> None:
    if not any((directory / name).is_file() for name in IMAGE_PROCESSOR_FILES):
        raise InputError(f"{directory} has no processor files ({' or '.join(IMAGE_PROCESSOR_FILES)})")
    if not any((directory / name).is_file() for name in TOKENIZER_FILES):
        raise InputError(f"{directory} has no tokenizer files ({', '.join(TOKENIZER_FILES)})")


def _model_type(directory: Path) -> str | None:
    config = directory / "config.json"
    return json.loads(config.read_text()).get("model_type") if config.is_file() else None


def _image_processor_config(directory: Path) -> dict:
    """Image-processor settings from preprocessor_config.json (or processor_config.json), minus class names."""
    path = directory / "preprocessor_config.json"
    if path.is_file():
        config = json.loads(path.read_text())
    else:
        config = json.loads((directory / "processor_config.json").read_text()).get("image_processor", {})
    return {k: v for k, v in config.items() if k not in ("image_processor_type", "processor_class", "auto_map")}


def _chat_template(directory: Path, tokenizer) -> str | None:
    jinja, legacy = directory / "chat_template.jinja", directory / "chat_template.json"
    if jinja.is_file():
        return jinja.read_text()
    if legacy.is_file():
        return json.loads(legacy.read_text())["chat_template"]
    return tokenizer.chat_template
