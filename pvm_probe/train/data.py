"""Training data for PVM: image + question + long answer, from the painter world or from local files.

`load_records(path)` reads the paper's SFT data layout (OpenMMReasoner-SFT style, a local JSON,
JSONL or parquet file) in any of three common shapes:
  - LLaVA conversations: {"image": "a.png" | ["a.png", ...], "conversations":
      [{"from": "human", "value": "<image>\\nQuestion"}, {"from": "gpt", "value": "Answer"}]}
  - chat messages: {"images": [...], "messages": [{"role": "user", "content": "..."},
      {"role": "assistant", "content": "..."}]}
  - flat: {"image": ..., "question" | "problem" | "prompt": ..., "answer" | "solution" | "response": ...}
Image paths are relative to the data file. `SFTCollator` turns records into a batch whose labels
cover the answer tokens only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

QUESTION_KEYS = ("question", "problem", "prompt", "query")
ANSWER_KEYS = ("answer", "solution", "response", "output")


@dataclass
class Record:
    question: str
    answer: str
    images: list = field(default_factory=list)  # PIL images or paths


def _rows(path: Path) -> list[dict]:
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        return data if isinstance(data, list) else data["data"]
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    raise ValueError(f"unsupported data file {path.name}: expected .json, .jsonl or .parquet")


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]


def _turns(row: dict) -> tuple[str, str]:
    if "conversations" in row:
        turns = row["conversations"]
        return turns[0]["value"], turns[1]["value"]
    if "messages" in row:
        user = next(m for m in row["messages"] if m["role"] == "user")
        assistant = next(m for m in row["messages"] if m["role"] == "assistant")
        return _text(user["content"]), _text(assistant["content"])
    question = next((row[k] for k in QUESTION_KEYS if k in row), None)
    answer = next((row[k] for k in ANSWER_KEYS if k in row), None)
    if question is None or answer is None:
        raise ValueError(f"record has no question/answer fields: keys {sorted(row)}")
    return question, answer


def _text(content) -> str:
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if part.get("type") == "text")


def _image(value, root: Path):
    if isinstance(value, dict) and "bytes" in value:  # parquet image column
        import io

        return Image.open(io.BytesIO(value["bytes"])).convert("RGB")
    path = root / value
    if not path.is_file():
        raise FileNotFoundError(f"image {path} named by the data file is missing")
    return path


def load_records(path) -> list[Record]:
    path = Path(path)
    records = []
    for row in _rows(path):
        question, answer = _turns(row)
        images = _as_list(row.get("images", row.get("image")))
        question = question.replace("<image>", "").strip()
        records.append(Record(question, answer, [_image(v, path.parent) for v in images]))
    return records


def _open(image) -> Image.Image:
    return image if isinstance(image, Image.Image) else Image.open(image).convert("RGB")


def _prompt(processor, record: Record) -> str:
    content = [{"type": "image"} for _ in record.images] + [{"type": "text", "text": record.question}]
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


class SFTCollator:
    """Records -> padded batch; labels = -100 everywhere but the answer (and its end token)."""

    def __init__(self, processor, max_length: int | None = None):
        self.processor, self.max_length = processor, max_length
        self.end = processor.tokenizer.eos_token or ""

    def _encode(self, texts, images):
        images = images if any(images) else None
        return self.processor(text=texts, images=images, return_tensors="pt", padding=True)

    def __call__(self, records: list[Record]) -> dict:
        prompts = [_prompt(self.processor, r) for r in records]
        images = [[_open(i) for i in r.images] for r in records]
        batch = self._encode([p + r.answer + self.end for p, r in zip(prompts, records, strict=True)], images)
        labels = batch["input_ids"].clone()  # [B, T]
        for row, (prompt, imgs) in enumerate(zip(prompts, images, strict=True)):
            prompt_len = self._encode([prompt], [imgs])["input_ids"].shape[1]
            real = batch["attention_mask"][row].nonzero()  # positions of real tokens
            start = int(real[0]) if len(real) else 0
            labels[row, : start + prompt_len] = -100
            labels[row, batch["attention_mask"][row] == 0] = -100
        batch["labels"] = labels
        if self.max_length and batch["input_ids"].shape[1] > self.max_length:
            raise ValueError(f"example of {batch['input_ids'].shape[1]} tokens exceeds max_length {self.max_length}")
        return dict(batch)


class RecordDataset(torch.utils.data.Dataset):
    def __init__(self, records: list[Record]):
        self.records = records

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> Record:
        return self.records[i]
