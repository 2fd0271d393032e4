"""PVM training: Stage I (SFT, transformers.Trainer) and Stage II (GRPO)."""

from .data import Record, RecordDataset, SFTCollator, load_records
from .sft import StageIConfig, train_stage1

__all__ = ["Record", "RecordDataset", "SFTCollator", "StageIConfig", "load_records", "train_stage1"]
