"""TunedLens: a learned affine translator per decoder layer, read by the same probe as the LogitLens.

The recipe of Belrose et al. (2023), "Eliciting Latent Predictions from Transformers with the Tuned
Lens", and of their `tuned-lens` package: layer l's residual output h is read as
`lm_head(final_norm(h + A_l h + b_l))`, with A_l [d, d] and b_l [d] initialised at zero, so an untrained
lens is the logit lens exactly. The translators are trained to minimise KL(final || translated layer),
the model's own output distribution at the same position being the target, with the backbone frozen
(the final norm and LM head only pass gradients through). The data are the base's own generations:
`record_generations(model, inputs, ...)` runs `generate` and keeps, at every position that produced a
generated token (up to each row's stop token), every layer's output and the LM head's input.

Defaults (`LensTraining`) are the package's: SGD with Nesterov momentum 0.9, learning rate 1.0 x
(1 - 0.9) = 0.1 decayed linearly to 0, weight decay 1e-3 (towards the identity), gradient norm clipped at
1, 250 steps; each step takes up to 2,048 positions (all of them at toy size) and backpropagates one layer
at a time. On the shipped baseline (4 layers x 128, 66 k lens parameters), trained on 4 short answers
(260 positions, ~1.2 s on one core), the mean KL of layers 0-2 on 4 other scenes falls from 1.09 to 0.42
nats (1,028 positions, ~5 s: 1.34 to 0.36); Adam (lr 1e-3) came within 0.02 nats of it. At Qwen3-VL-8B size
(36 layers x 4,096) the lens has 36 x (4,096^2 + 4,096) = 604 M parameters, 2.4 GB in float32 (7.3 GB
with gradients and momentum), and recorded states take 36 x 4,096 x 2 bytes = 0.3 MB per position in
bf16: full rank fits one GPU beside the model, so there is no low-rank option.

Why not the `tuned-lens` package (0.2.0): its model surgery finds the final norm and the layers through
an isinstance chain over causal LMs (GPT-2, NeoX, OPT, BLOOM, Llama...) and raises NotImplementedError
for `Qwen3VLModel`, and its training loop feeds text-only batches and imports `torchdata.dataloader2`,
which torchdata 0.10+ no longer has (it also saves with pickle, `torch.save`).
"""

from __future__ import annotations

import json
import math
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save
from torch import nn

from ..backbones import decoder_layers, get_module, hook_sites, stop_token_ids, text_config
from ..checkpoints import base_fingerprint, check_fingerprint
from ..errors import AdapterError, AdapterMismatchError, InputError
from ..io import atomic_write, atomic_write_json
from ..records import rounded_kl
from ._base import HookProbe, last_hidden

CONFIG_FILE = "lens_config.json"
WEIGHTS_FILE = "lens.safetensors"
FORMAT_VERSION = 1


@dataclass
class LensTraining:
    """How a tuned lens is trained (recorded in `lens_config.json`)."""

    steps: int = 250
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum) | "adam"
    lr: float = 0.1  # the package's lr_scale 1.0 x (1 - momentum)
    momentum: float = 0.9  # SGD momentum, or Adam's beta1
    weight_decay: float = 1e-3
    clip: float = 1.0  # max gradient norm over all translators
    batch_tokens: int = 2048  # tokens per step (all of them if there are fewer)
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> LensTraining:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class LensData:
    """Training or evaluation states at N generated positions."""

    hidden: torch.Tensor  # [L, N, d] every decoder layer's output
    final: torch.Tensor  # [N, d] the LM head's input: the model's own final state

    def __len__(self) -> int:
        return self.final.shape[0]

    @classmethod
    def cat(cls, parts: list[LensData]) -> LensData:
        return cls(torch.cat([p.hidden for p in parts], 1), torch.cat([p.final for p in parts], 0))


class _Recorder(HookProbe):
    """Keeps every layer's output and the LM head's input at each forward's last position."""

    def __init__(self, model: nn.Module):
        super().__init__(model)
        self.num_layers = len(decoder_layers(model))
        self._current: dict[int, torch.Tensor] = {}  # layer -> [B, d] of the running forward
        self.hidden: list[torch.Tensor] = []  # per forward: [L, B, d]
        self.final: list[torch.Tensor] = []  # per forward: [B, d]

    def _install(self) -> None:
        for i, layer in enumerate(decoder_layers(self.model)):
            self._hook(layer.register_forward_hook(lambda _m, _a, out, i=i: self._keep(i, out)))
        lm_head = get_module(self.model, self.sites.lm_head)
        self._hook(lm_head.register_forward_pre_hook(lambda _m, args: self._read(args[0])))

    def _keep(self, layer: int, output) -> None:
        self._current[layer] = last_hidden(output)[:, -1].detach()  # [B, d]

    def _read(self, lm_input: torch.Tensor) -> None:
        if len(self._current) != self.num_layers:
            return  # an LM-head call outside a full forward: not ours
        self.hidden.append(torch.stack([self._current[i] for i in range(self.num_layers)]))  # [L, B, d]
        self.final.append(lm_input[:, -1].detach())  # [B, d]
        self._current = {}

    def _finish(self) -> None:
        pass


def _before_end(new_tokens: torch.Tensor, stop: list[int]) -> torch.Tensor:
    """[B, T] bool: positions up to and including each row's first stop token."""
    ended = torch.isin(new_tokens, torch.tensor(stop, dtype=new_tokens.dtype, device=new_tokens.device)).int()
    return (ended.cumsum(1) - ended) == 0  # [B, T]


@torch.no_grad()
def record_generations(model: nn.Module, inputs: dict, **generate_kwargs) -> LensData:
    """Run `model.generate(**inputs, **generate_kwargs)` and keep the states of every position that
    produced a generated token, up to each row's end-of-text token (rows padded after it are dropped)."""
    with _Recorder(model) as recorder:
        sequences = model.generate(**inputs, **generate_kwargs)  # [B, P + T]
    steps = len(recorder.final)
    new = sequences[:, sequences.shape[1] - steps:]  # [B, T]: token t was produced by forward t
    eos = generate_kwargs.get("eos_token_id")
    stop = stop_token_ids(model) if eos is None else torch.tensor(eos).flatten().tolist()
    keep = _before_end(new, stop)  # [B, T]
    hidden = torch.stack(recorder.hidden).permute(1, 2, 0, 3)  # [L, B, T, d]
    final = torch.stack(recorder.final).transpose(0, 1)  # [B, T, d]
    return LensData(hidden=hidden[:, keep], final=final[keep])


@contextmanager
def _frozen(*modules: nn.Module):
    """Parameters of `modules` need no gradient inside the context; restored afterwards."""
    params = [p for m in modules for p in m.parameters()]
    before = [p.requires_grad for p in params]
    try:
        for p in params:
            p.requires_grad_(False)
        yield
    finally:
        for p, flag in zip(params, before, strict=True):
            p.requires_grad_(flag)


@dataclass
class TunedLensConfig:
    num_layers: int
    hidden_size: int
    base: dict  # base_fingerprint(model) of the model the lens belongs to
    training: dict | None = None  # LensTraining.to_dict() plus tokens and KL, once trained

    def to_dict(self) -> dict:
        return asdict(self)


class TunedLens(nn.Module):
    """Per decoder layer l: h -> h + A_l h + b_l, read through the model's final norm and LM head.

    Use it with the probe: `with LogitLens(model, lens=tuned) as probe: model.generate(...)`."""

    def __init__(self, config: TunedLensConfig, device=None):
        super().__init__()
        self.config = config
        L, d = config.num_layers, config.hidden_size
        # one parameter per layer, so a layer's backward touches only its own gradient
        self.weights = nn.ParameterList(torch.zeros(d, d, device=device) for _ in range(L))  # L x [d_out, d_in]: A_l
        self.biases = nn.ParameterList(torch.zeros(d, device=device) for _ in range(L))  # L x [d]: b_l

    @classmethod
    def for_model(cls, model: nn.Module) -> TunedLens:
        """An untrained (identity) lens for `model`, on the model's device."""
        config = TunedLensConfig(len(decoder_layers(model)), text_config(model).hidden_size, base_fingerprint(model))
        return cls(config, device=model.get_input_embeddings().weight.device)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def check(self, model: nn.Module) -> None:
        """Raise AdapterMismatchError unless the lens belongs to `model`'s base."""
        check_fingerprint(self.config.base, model)

    def translate_layer(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """hidden [..., d] of decoder layer `layer` -> h + A h + b in the lens's dtype."""
        weight = self.weights[layer]  # [d, d]
        h = hidden.to(weight)  # [..., d]
        return h + F.linear(h, weight, self.biases[layer])

    def translate(self, hidden: torch.Tensor, layers=None) -> torch.Tensor:
        """hidden [L', ..., d] of decoder layers `layers` (default: all) -> translated, same dtype and device."""
        layers = range(self.config.num_layers) if layers is None else layers
        out = torch.stack([self.translate_layer(h, i) for h, i in zip(hidden, layers, strict=True)])
        return out.to(hidden)

    def fit(self, model: nn.Module, data: LensData, training: LensTraining | None = None) -> list[float]:
        """Train on `data` from `model` (frozen); returns the mean KL over layers at every step."""
        training = training or LensTraining()
        norm, lm_head = _unembedding(model)
        opt = _optimizer(self.parameters(), training)
        schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / training.steps)
        g = torch.Generator().manual_seed(training.seed)
        history = []
        with _frozen(norm, lm_head):
            for idx in _batches(len(data), training, g):
                history.append(self._step(norm, lm_head, data, idx.to(data.final.device)))
                nn.utils.clip_grad_norm_(self.parameters(), training.clip)
                opt.step()
                opt.zero_grad()
                schedule.step()
        self.config.training = {**training.to_dict(), "tokens": len(data),
                                "train_kl_first": rounded_kl(history[0], 6),
                                "train_kl_last": rounded_kl(history[-1], 6)}
        return history

    def _step(self, norm, lm_head, data: LensData, idx: torch.Tensor) -> float:
        """Backpropagate KL(final || layer) one layer at a time; returns the mean over layers."""
        with torch.no_grad():
            target = _log_probs(lm_head(data.final[idx]))  # [n, V]
        total = 0.0
        for layer in range(self.config.num_layers):
            translated = self.translate_layer(data.hidden[layer, idx], layer)  # [n, d]
            logits = lm_head(norm(translated.to(data.hidden.dtype)))  # [n, V]
            loss = _kl(target, _log_probs(logits)).mean()
            loss.backward()
            total += loss.item()
        return total / self.config.num_layers

    @torch.no_grad()
    def kl(self, model: nn.Module, data: LensData, batch_tokens: int = 2048) -> torch.Tensor:
        """[L] mean KL(final || translated layer) over the positions of `data`."""
        norm, lm_head = _unembedding(model)
        sums = torch.zeros(self.config.num_layers, dtype=torch.float64)
        for start in range(0, len(data), batch_tokens):
            target = _log_probs(lm_head(data.final[start:start + batch_tokens]))  # [n, V]
            for layer in range(self.config.num_layers):
                h = self.translate_layer(data.hidden[layer, start:start + batch_tokens], layer)  # [n, d]
                sums[layer] += _kl(target, _log_probs(lm_head(norm(h.to(data.hidden.dtype))))).sum().double().cpu()
        return (sums / len(data)).float()

    def save(self, directory) -> Path:
        """Write `lens.safetensors` and `lens_config.json` into `directory` (atomically)."""
        directory = Path(directory)
        tensors = {"weight": torch.stack([w.detach().cpu() for w in self.weights]),  # [L, d, d]
                   "bias": torch.stack([b.detach().cpu() for b in self.biases])}  # [L, d]
        meta = {"format_version": FORMAT_VERSION, **self.config.to_dict()}
        data = save(tensors, metadata={"format": "pt"})  # bytes: save_file would create a 0600 file
        atomic_write(directory / WEIGHTS_FILE, lambda tmp: Path(tmp).write_bytes(data))
        atomic_write_json(directory / CONFIG_FILE, meta)
        return directory

    @classmethod
    def load(cls, directory, model: nn.Module, allow_other_weights: bool = False) -> TunedLens:
        """The lens saved in `directory`, on `model`'s device. Refuses a lens of another base (with
        `allow_other_weights`, only one of another architecture or size), before reading its weights."""
        directory = Path(directory)
        config = _read_config(directory)
        try:
            check_fingerprint(config.base, model, allow_other_weights=allow_other_weights)
        except AdapterMismatchError as err:
            raise AdapterMismatchError(f"tuned lens {directory} belongs to another base: {err}") from None
        weights = _read_weights(directory / WEIGHTS_FILE, _expected_shapes(config, model))
        lens = cls(config, device=model.get_input_embeddings().weight.device)
        with torch.no_grad():
            for layer in range(config.num_layers):
                lens.weights[layer].copy_(weights["weight"][layer])
                lens.biases[layer].copy_(weights["bias"][layer])
        return lens


def _unembedding(model: nn.Module) -> tuple[nn.Module, nn.Module]:
    sites = hook_sites(model)
    return get_module(model, sites.final_norm), get_module(model, sites.lm_head)


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    return logits.float().log_softmax(-1)


def _kl(target: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """[n] KL(target || log_probs) from log-probabilities [n, V]."""
    return (target.exp() * (target - log_probs)).sum(-1)


def _optimizer(params, training: LensTraining) -> torch.optim.Optimizer:
    if training.optimizer == "sgd":
        return torch.optim.SGD(params, lr=training.lr, momentum=training.momentum, nesterov=True,
                               weight_decay=training.weight_decay)
    if training.optimizer == "adam":  # the package's Adam (AMSGrad), without its warm-up
        return torch.optim.Adam(params, lr=training.lr, betas=(training.momentum, 0.999), amsgrad=True,
                                weight_decay=training.weight_decay)
    raise InputError(f"unknown optimizer {training.optimizer!r}; known: sgd, adam")


def _batches(n: int, training: LensTraining, g: torch.Generator):
    """`training.steps` index tensors: all n positions, or shuffled chunks of `batch_tokens`."""
    if n == 0:
        raise InputError("no training positions for the tuned lens: the generations are empty")
    if n <= training.batch_tokens:
        everything = torch.arange(n)
        return [everything] * training.steps
    per_epoch = n // training.batch_tokens
    epochs = math.ceil(training.steps / per_epoch)
    chunks = [c for _ in range(epochs) for c in torch.randperm(n, generator=g).split(training.batch_tokens)[:per_epoch]]
    return chunks[:training.steps]


def _read_config(directory: Path) -> TunedLensConfig:
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: not a tuned-lens directory")
    try:
        meta = json.loads(path.read_text())
        if meta["format_version"] > FORMAT_VERSION:
            raise ValueError(f"format_version {meta['format_version']} is newer than this code's {FORMAT_VERSION}")
        return TunedLensConfig(int(meta["num_layers"]), int(meta["hidden_size"]), dict(meta["base"]),
                               meta.get("training"))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise AdapterError(f"corrupted tuned-lens config {path}: {type(err).__name__}: {err}") from None


def _expected_shapes(config: TunedLensConfig, model: nn.Module) -> dict[str, tuple[int, ...]]:
    L, d = len(decoder_layers(model)), text_config(model).hidden_size
    if (config.num_layers, config.hidden_size) != (L, d):
        raise AdapterMismatchError(f"tuned lens is for {config.num_layers} layers x {config.hidden_size}, "
                                   f"this model has {L} x {d}")
    return {"weight": (L, d, d), "bias": (L, d)}


def _read_weights(path: Path, expected: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """Names and shapes from the safetensors header checked against `expected`, then the tensors."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the tuned lens has no weights")
    try:
        with safe_open(path, "pt") as f:
            found = {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    except (SafetensorError, OSError) as err:
        raise AdapterError(f"corrupted tuned-lens weights {path}: {err}") from None
    if set(found) != set(expected):
        raise AdapterError(f"{path} holds tensors {sorted(found)}, expected {sorted(expected)}")
    for name, shape in expected.items():
        if found[name] != shape:
            raise AdapterError(f"{path}: tensor {name} has shape {found[name]}, expected {shape}")
    try:
        return load_file(path)
    except (SafetensorError, OSError) as err:
        raise AdapterError(f"corrupted tuned-lens weights {path}: {err}") from None
