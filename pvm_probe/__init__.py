"""pvm_probe: probe and fix visual signal dilution in vision-language models."""

from .checkpoints import count_pvm_params, load_pvm, read_adapter_meta, save_adapter
from .config import PVMConfig, strided_layers
from .inject import PVMHandle, attach_pvm, freeze_backbone

__all__ = [
    "PVMConfig",
    "PVMHandle",
    "attach_pvm",
    "count_pvm_params",
    "freeze_backbone",
    "load_pvm",
    "read_adapter_meta",
    "save_adapter",
    "strided_layers",
]
