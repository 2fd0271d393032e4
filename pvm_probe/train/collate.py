"""Stage I batches: records -> prompt tokens + answer tokens, labels on the answer only, with a length cap.

The prompt (chat template, the images expanded into their tokens by the processor) and the answer
(tokenised on its own, then the tokenizer's end token) are concatenated, as the model would see them at
generation time, and padded on the right. Labels are -100 everywhere but the answer and its end token.

`max_length` caps prompt + answer tokens, counted after the image tokens are expanded: the answer is cut
(losing its end token when cut), never the prompt. A record whose prompt alone reaches `max_length` keeps its
whole prompt and no answer, so it adds nothing to the loss; `prompt_only` counts such records and the first
one is named in a one-line warning (raise --max-length, or drop the record).
"""

from __future__ import annotations

import sys

import torch
from torch.nn.utils.rnn import pad_sequence

from ..errors import InputError
from .data import Record, open_image

IGNORE = -100


class SFTCollator:
    """Records -> a right-padded batch: input_ids, attention_mask, labels, the processor's image tensors and
    any other per-token tensor it returns (mm_token_type_ids: 0 over the answer)."""

    def __init__(self, processor, max_length: int | None = None, warn=None):
        self.processor, self.max_length = processor, max_length
        self.tokenizer = processor.tokenizer
        self.end = self.tokenizer.eos_token or ""
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.prompt_only = 0
        self.warn = warn or (lambda message: print(f"warning: {message}", file=sys.stderr))

    def prompt(self, record: Record) -> str:
        return self.processor.apply_chat_template(record.messages(), add_generation_prompt=True, tokenize=False)

    def __call__(self, records: list[Record]) -> dict:
        prompts = self._prompts(records)  # left-padded, with the image tensors
        real = prompts["attention_mask"].bool()  # [B, P]
        answers = self.tokenizer([r.answer + self.end for r in records], add_special_tokens=False)["input_ids"]
        per_token = [k for k, v in prompts.items() if torch.is_tensor(v) and v.shape == real.shape and k != "attention_mask"]
        rows = {k: [] for k in per_token}
        labels = []
        for b, record in enumerate(records):
            answer = torch.tensor(self._cut(answers[b], int(real[b].sum()), record), dtype=torch.long)  # [A]
            for key in per_token:
                tail = answer if key == "input_ids" else torch.zeros_like(answer)
                rows[key].append(torch.cat([prompts[key][b][real[b]], tail.to(prompts[key].dtype)]))
            labels.append(torch.cat([torch.full((int(real[b].sum()),), IGNORE), answer]))
        batch = {k: v for k, v in prompts.items() if k not in rows and k != "attention_mask"}
        for key, values in rows.items():
            batch[key] = pad_sequence(values, batch_first=True, padding_value=self.pad_id if key == "input_ids" else 0)
        lengths = torch.tensor([len(x) for x in labels])  # [B]
        batch["attention_mask"] = (torch.arange(int(lengths.max()))[None] < lengths[:, None]).long()  # [B, T]
        batch["labels"] = pad_sequence(labels, batch_first=True, padding_value=IGNORE)  # [B, T]
        return batch

    def _prompts(self, records: list[Record]) -> dict:
        images = [[open_image(i) for i in r.images] for r in records]
        texts = [self.prompt(r) for r in records]
        try:
            return dict(self.processor(text=texts, images=images if any(images) else None, return_tensors="pt",
                                       padding=True))
        except (ValueError, OSError) as err:
            where = ", ".join(r.where for r in records if r.where)
            raise InputError(f"cannot process the batch of {where or 'records'}: {err}") from None

    def _cut(self, answer: list[int], prompt_len: int, record: Record) -> list[int]:
        """The answer's ids, cut so prompt + answer <= max_length."""
        if self.max_length is None:
            return answer
        room = self.max_length - prompt_len
        if room <= 0:
            if self.prompt_only == 0:
                self.warn(f"{record.where or 'a record'}: its prompt alone is {prompt_len} tokens, "
                          f">= --max-length {self.max_length}: kept whole with no answer tokens (no loss)")
            self.prompt_only += 1
            return []
        return answer[:room]


def limit_pixels(processor, max_pixels: int) -> str | None:
    """Cap the pixels per image: Qwen image processors resize to at most `max_pixels` (size["longest_edge"];
    the minimum, size["shortest_edge"], is lowered to it when above). Returns a note when the processor has a
    fixed size instead (LLaVA: every image becomes one fixed square), None when applied.
    An InputError when `max_pixels` is below one merged patch (patch_size x merge_size, squared)."""
    image_processor = processor.image_processor
    size = getattr(image_processor, "size", None)
    if size is None or size.get("longest_edge") is None or getattr(image_processor, "merge_size", None) is None:
        side = _fixed_side(image_processor)
        return (f"--max-pixels has no effect on {type(image_processor).__name__}: it resizes every image to a fixed "
                f"{side} pixels")
    factor = image_processor.patch_size * image_processor.merge_size
    if max_pixels < factor * factor:
        raise InputError(f"--max-pixels {max_pixels} is below one merged patch of this processor "
                         f"({factor}x{factor} = {factor * factor} pixels)")
    size["longest_edge"] = max_pixels
    if size.get("shortest_edge") is not None and size["shortest_edge"] > max_pixels:
        size["shortest_edge"] = max_pixels
    for name in ("max_pixels", "min_pixels"):  # older processors keep copies of the bounds
        if getattr(image_processor, name, None) is not None:
            setattr(image_processor, name, size["longest_edge" if name == "max_pixels" else "shortest_edge"])
    return None


def _fixed_side(image_processor) -> str:
    crop = getattr(image_processor, "crop_size", None)
    size = getattr(image_processor, "size", None)
    for box in (crop, size):
        if box is not None and box.get("height") and box.get("width"):
            return f"{box['width']}x{box['height']}"
    if size is not None and size.get("shortest_edge"):
        return f"{size['shortest_edge']}x{size['shortest_edge']}"
    return "size of"
