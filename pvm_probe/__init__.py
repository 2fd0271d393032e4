"""pvm_probe: probe and fix visual signal dilution in vision-language models.

The public API below loads on first use (PEP 562), so `import pvm_probe` (and the CLI's `--help`) does
not pull in torch.
"""

from importlib import import_module

_API = {
    "AdapterMismatchError": "errors", "ConfigError": "errors", "InputError": "errors",
    "PVMConfig": "config", "strided_layers": "config",
    "PVMHandle": "inject", "attach_pvm": "inject", "freeze_backbone": "inject", "load_pvm": "inject",
    "read_adapter_meta": "checkpoints", "save_adapter": "checkpoints", "count_pvm_params": "memory",
    "load_base": "loading",
    "Job": "jobs", "ModelSpec": "jobs", "SuiteSpec": "jobs",
    "RunConfig": "runner",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'pvm_probe' has no attribute {name!r}")
    value = getattr(import_module(f".{_API[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return __all__
