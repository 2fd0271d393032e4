"""Training data files: records of image(s) + question (+ answer), in JSON, JSONL or parquet.

One record per JSONL line, JSON array element or parquet row, in any of three shapes (a file may mix them):
  - LLaVA conversations: {"image": "a.png" | ["a.png", ...], "conversations":
      [{"from": "human", "value": "<image>\\nQuestion"}, {"from": "gpt", "value": "Answer"}, ...]}
  - chat messages: {"images": [...], "messages": [{"role": "user", "content": "..." | [parts]},
      {"role": "assistant", "content": ...}]}
  - flat: {"image" | "images": ..., "question" | "problem" | "prompt" | "query": ...,
      "answer" | "solution" | "response" | "output": ...}   (the first key found in that order)
Images: paths relative to the data file, or parquet image structs {"bytes": ...}; none: a text-only record.
"<image>" placeholders are dropped from the question: the images come first in the user turn.

`scan_data(path, ...)` reads the whole file once, record by record, before any model loads, and stops at the
first bad record with a one-line InputError naming it by line (JSON / JSONL) or row (parquet): not valid
JSON, not an object, no question or answer it can find, an empty one, an image that is missing or whose
header does not parse, or whatever the `check` hooks refuse. Images are opened for their header only, never
decoded or kept. It returns a `DataFile` that
reads record i on demand: a JSONL line from its byte offset, a parquet row from its row group (one group
cached: for shuffled access to a large parquet with embedded images, prefer smaller row groups); a .json
array is parsed whole and kept (use JSONL or parquet for large sets).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..io import decode_utf8, read_text

QUESTION_KEYS = ("question", "problem", "prompt", "query")
ANSWER_KEYS = ("answer", "solution", "response", "output")
SUFFIXES = (".json", ".jsonl", ".parquet")
USER_ROLES, ASSISTANT_ROLES = ("human", "user"), ("gpt", "assistant")


class RecordError(ValueError):
    """One record's problem (the caller adds where it is)."""


@dataclass
class Record:
    question: str
    answer: str | None
    images: list = field(default_factory=list)  # Paths, bytes of an embedded image, or PIL images
    where: str = ""  # "data.jsonl line 12": for messages about this record

    def messages(self) -> list[dict]:
        """The user turn as the chat template reads it: the images, then the question."""
        content = [{"type": "image"} for _ in self.images] + [{"type": "text", "text": self.question}]
        return [{"role": "user", "content": content}]


def open_image(source):
    """A record's image (a path, embedded bytes or a PIL image) as an RGB PIL image."""
    from PIL import Image

    if isinstance(source, Image.Image):
        return source.convert("RGB")
    image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    return image.convert("RGB")


# ---- one record ---------------------------------------------------------------------------------------
def parse_record(row, root: Path, need_answer: bool = True) -> Record:
    """A Record from one parsed row; RecordError says what is wrong with it."""
    if not isinstance(row, dict):
        raise RecordError(f"expected a JSON object, got {type(row).__name__}")
    question, answer = _turns(row)
    question = _text(question, "question").replace("<image>", "").strip()
    if not question:
        raise RecordError("the question is empty")
    if answer is not None:
        answer = _text(answer, "answer")
    if need_answer and not (answer or "").strip():
        raise RecordError(f"no answer: expected an assistant turn or one of {', '.join(ANSWER_KEYS)}")
    images = [_image(value, root) for value in _as_list(row.get("images", row.get("image")))]
    return Record(question, answer, images)


def _turns(row: dict) -> tuple:
    if "conversations" in row:
        return _conversation(row["conversations"], "conversations", "from", "value")
    if "messages" in row:
        return _conversation(row["messages"], "messages", "role", "content")
    question = next((row[k] for k in QUESTION_KEYS if k in row), None)
    if question is None:
        raise RecordError(f"no question: expected 'conversations', 'messages' or one of {', '.join(QUESTION_KEYS)}; "
                          f"keys: {sorted(map(str, row))[:8]}")
    return question, next((row[k] for k in ANSWER_KEYS if row.get(k) is not None), None)


def _conversation(turns, key: str, role: str, content: str) -> tuple:
    """The first user turn and the assistant turn after it (None if there is none)."""
    if not isinstance(turns, list) or not all(isinstance(t, dict) and role in t and content in t for t in turns):
        raise RecordError(f"'{key}' must be a list of {{'{role}': ..., '{content}': ...}} turns")
    users = [i for i, t in enumerate(turns) if t[role] in USER_ROLES]
    if not users:
        raise RecordError(f"'{key}' has no user turn ({role} {' or '.join(USER_ROLES)})")
    first = users[0]
    answer = next((t[content] for t in turns[first + 1:] if t[role] in ASSISTANT_ROLES), None)
    return turns[first][content], answer


def _text(content, name: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) for p in content):
        return " ".join(str(p.get("text", "")) for p in content if p.get("type") == "text")
    raise RecordError(f"the {name} must be text or a list of content parts, got {type(content).__name__}")


def _as_list(value) -> list:
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]


def _image(value, root: Path):
    if isinstance(value, dict) and isinstance(value.get("bytes"), bytes):
        return value["bytes"]
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        value = value["path"]
    if not isinstance(value, str) or not value:
        raise RecordError(f"an image must be a path or an embedded image, got {type(value).__name__}")
    path = root / value
    if not path.is_file():
        raise RecordError(f"image {path} is missing")
    return path


def check_image(source) -> None:
    """The image's header parses (PIL reads the header only; the pixels are not decoded)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            image.size  # noqa: B018 - the header is read
    except (UnidentifiedImageError, OSError) as err:
        name = source if isinstance(source, Path) else "the embedded image"
        raise RecordError(f"{name} is not a readable image ({type(err).__name__})") from None


# ---- the file -----------------------------------------------------------------------------------------
class DataFile:
    """The records of a scanned data file, each read on demand (`data[i]` -> Record)."""

    def __init__(self, path: Path, locators: list, rows: list | None, need_answer: bool, kinds: dict):
        self.path, self.locators, self.rows, self.need_answer = path, locators, rows, need_answer
        self.kinds = kinds  # {"records": n, "text_only": k}
        self._group: tuple[int, list] | None = None

    def __len__(self) -> int:
        return len(self.locators)

    def __getitem__(self, i: int) -> Record:
        where, row = self._row(i)
        try:
            record = parse_record(row, self.path.parent, self.need_answer)
        except RecordError as err:  # the file changed since the scan
            raise InputError(f"{where}: {err}") from None
        record.where = where
        return record

    def _row(self, i: int) -> tuple[str, dict]:
        locator = self.locators[i]
        if self.path.suffix == ".jsonl":
            offset, line = locator
            with self.path.open("rb") as f:
                f.seek(offset)
                return f"{self.path} line {line}", json.loads(f.readline())
        if self.path.suffix == ".json":
            index, where = locator
            return where, self.rows[index]
        group, offset, number = locator
        if self._group is None or self._group[0] != group:
            import pyarrow.parquet as pq

            self._group = (group, pq.ParquetFile(self.path).read_row_group(group).to_pylist())
        return f"{self.path} row {number}", self._group[1][offset]


def scan_data(path, need_answer: bool = True, checks: tuple[Callable[[Record], str | None], ...] = ()) -> DataFile:
    """Validate every record of `path` (streaming; image headers read, pixels never decoded) and index them.

    need_answer: every record must have an answer (Stage I, or a reward that reads it). checks: more rules,
    each `check(record) -> problem or None`. The first problem is a one-line InputError naming the record."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise InputError(f"{path}: unsupported data file; expected {', '.join(SUFFIXES)}")
    if not path.is_file():
        raise InputError(f"data file {path} does not exist")
    locators, text_only, rows = [], 0, None
    if path.suffix == ".json":
        rows = []
    for where, locator, row in _read_rows(path):
        try:
            record = parse_record(row, path.parent, need_answer)
            for image in record.images:
                check_image(image)
            problem = next((p for p in (check(record) for check in checks) if p), None)
        except RecordError as err:
            problem = str(err)
        if problem:
            raise InputError(f"{where}: {problem}")
        if rows is not None:
            rows.append(row)
            locator = (len(rows) - 1, where)
        locators.append(locator)
        text_only += not record.images
    if not locators:
        raise InputError(f"{path} holds no records")
    return DataFile(path, locators, rows, need_answer, {"records": len(locators), "text_only": text_only})


def _read_rows(path: Path) -> Iterator[tuple[str, object, object]]:
    """(where, locator, row) for every record of the file, read one at a time."""
    if path.suffix == ".jsonl":
        yield from _jsonl_rows(path)
    elif path.suffix == ".json":
        yield from _json_rows(path)
    else:
        yield from _parquet_rows(path)


def _jsonl_rows(path: Path):
    offset = 0
    with path.open("rb") as f:
        for number, line in enumerate(f, start=1):
            start, offset = offset, offset + len(line)
            if not line.strip():
                continue
            where = f"{path} line {number}"
            try:
                row = json.loads(decode_utf8(line, path, start, number))
            except json.JSONDecodeError as err:
                raise InputError(f"{where}: not valid JSON ({err.msg})") from None
            yield where, (start, number), row


def _json_rows(path: Path):
    """The elements of a top-level array (with their line numbers), or of {"data": [...]}."""
    text = read_text(path)
    decoder, start = json.JSONDecoder(), _skip_space(text, 0)
    if not text.startswith("[", start):
        yield from _json_object_rows(path, text)
        return
    position = _skip_space(text, start + 1)
    while position < len(text) and text[position] != "]":
        line = text.count("\n", 0, position) + 1
        try:
            row, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as err:
            raise InputError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
        yield f"{path} line {line}", None, row
        position = _skip_space(text, position)
        if text.startswith(",", position):
            position = _skip_space(text, position + 1)
        elif not text.startswith("]", position):
            raise InputError(f"{path} line {text.count(chr(10), 0, position) + 1}: expected ',' or ']' in the array")


def _json_object_rows(path: Path, text: str):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise InputError(f"{path}: expected a JSON array of records or an object with a 'data' array")
    for number, row in enumerate(data["data"], start=1):
        yield f"{path} record {number}", None, row


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position] in " \t\r\n":
        position += 1
    return position


def _parquet_rows(path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as err:
        raise InputError(f"{path}: not a readable parquet file ({err})") from None
    number = 0
    for group in range(parquet.metadata.num_row_groups):
        for offset, row in enumerate(parquet.read_row_group(group).to_pylist()):
            number += 1
            yield f"{path} row {number}", (group, offset, number), row
