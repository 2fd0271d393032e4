"""The jobs behind the commands, as library calls with dataclass configs: report, paint, probe.

    job = Job(model=ModelSpec(base="/models/Qwen3-VL-8B-Instruct"), suite=SuiteSpec(scenes=200),
              adapters=["pvm-8b"])
    report(job, "out/report")          # records -> metrics.json, figures, report.html
    metrics = paint(job)               # claims by quarter, no probes
    metrics = probe(job)               # the same with the probes

Everything is checked before the weights load: the suite's settings and data, the adapters, the output
folder, and whether the suite can run on the base (the painter world needs the world's own tokenizer).
The suite defaults to `world` for the embedded base and to `scenes` for any other; the shipped adapters
are offered only to the base they were trained on.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from .checkpoints import check_fingerprint, read_adapter_meta, resolve_adapter, shipped_adapter_names
from .errors import InputError
from .processes import process_state
from .records import RUN
from .runner import RunConfig, describe, run
from .suites import SUITES
from .variants import BASELINE, Variant, adapter_variants, plan


@dataclass
class ModelSpec:
    base: str | None = None  # a local checkpoint directory; None = the embedded default
    device: str | None = None  # default: cuda when available
    dtype: str = "auto"  # bfloat16 on a GPU, float32 on the CPU
    attn_implementation: str = "sdpa"


@dataclass
class SuiteSpec:
    name: str | None = None  # world | scenes | images; None: world for the embedded base, scenes otherwise
    scenes: int | None = None  # world / scenes: how many held-out scenes (default 64)
    seed: int | None = None  # world / scenes: which held-out set (default 0)
    length: int | None = None  # world: filler units per step (default: the long setting)
    filler: str | None = None  # world: said | count
    image_size: int | None = None  # scenes: rendered side in px (default 448)
    max_new_tokens: int | None = None  # scenes / images: answer budget
    data: str | None = None  # images: the JSONL file

    def resolved_name(self, base) -> str:
        return self.name or ("images" if self.data else "scenes" if base else "world")


@dataclass
class Job:
    model: ModelSpec = field(default_factory=ModelSpec)
    suite: SuiteSpec = field(default_factory=SuiteSpec)
    adapters: list | None = None  # None: the shipped adapters for the embedded base, none for another base
    arms: list = field(default_factory=list)  # training-free remedies run on the baseline
    controls: bool = True  # gates off and swapped image for every memory adapter
    baseline: bool = True
    only: str | None = None  # run a single variant: "adapter", "gates_off" or "swapped_image"
    tuned_lens: bool = True  # report: fit (or reuse) a tuned lens of the base and read it beside the LogitLens
    run: RunConfig = field(default_factory=RunConfig)


_SUITE_FIELDS = {"world": ("scenes", "seed", "length", "filler"), "scenes": ("scenes", "seed", "image_size",
                                                                                "max_new_tokens"),
                 "images": ("data", "max_new_tokens")}


def make_suite(spec: SuiteSpec, base=None):
    """The suite a spec names, checking that no other suite's settings were given."""
    name = spec.resolved_name(base)
    if name not in SUITES:
        raise InputError(f"unknown suite {name!r}; known: {', '.join(SUITES)}")
    given = {k for k in ("scenes", "seed", "length", "filler", "image_size", "max_new_tokens", "data")
             if getattr(spec, k) is not None}
    foreign = sorted(given - set(_SUITE_FIELDS[name]))
    if foreign:
        raise InputError(f"{', '.join('--' + f.replace('_', '-') for f in foreign)} do not apply to --suite {name}")
    options = {k: getattr(spec, k) for k in _SUITE_FIELDS[name] if getattr(spec, k) is not None}
    if name == "images" and "data" not in options:
        raise InputError("--suite images needs --data FILE.jsonl (one image + prompt per line)")
    return SUITES[name](**options)


SHIPPED_ORDER = ("pvm-stage1", "pvm-stage2", "mlp-control", "processed-control")


def default_adapters(base) -> list[str]:
    """The shipped adapters (PVM first, then the controls) for the embedded base; none for any other base."""
    if base:
        return []
    names = shipped_adapter_names()
    return sorted(names, key=lambda n: (SHIPPED_ORDER.index(n) if n in SHIPPED_ORDER else len(SHIPPED_ORDER), n))


def variants_of(job: Job) -> list[Variant]:
    """The variants the job compares, in report order."""
    adapters = job.adapters if job.adapters is not None else default_adapters(job.model.base)
    for adapter in adapters:
        resolve_adapter(adapter)  # a one-line error now, not after the base has loaded
    if job.only:
        return _single(job, adapters)
    return plan(adapters, controls=job.controls, arms=job.arms, baseline=job.baseline)


def _single(job: Job, adapters: list) -> list[Variant]:
    if job.only == "adapter":  # each named adapter as it is, or the baseline when none is named
        return [v for a in adapters for v in adapter_variants(a, controls=False)] or [BASELINE]
    if len(adapters) != 1:
        raise InputError(f"{job.only.replace('_', ' ')} needs exactly one adapter (--pvm)")
    chosen = [v for v in adapter_variants(adapters[0]) if v.control == job.only]
    if not chosen:
        raise InputError(f"{adapters[0]} is an MLP control adapter: the image controls are for memory adapters")
    return chosen


def check_adapter_fits(adapter, model) -> None:
    """A one-line AdapterMismatchError if `adapter` was trained on another base than `model`."""
    check_fingerprint(read_adapter_meta(adapter, check_weights=False)["base"], model)


def open_job(job: Job):
    """(model, processor, suite, variants): everything checked, then the base loaded."""
    from .loading import load_base

    suite = make_suite(job.suite, job.model.base)
    variants = variants_of(job)
    model, processor = load_base(job.model.base, device=job.model.device, dtype=job.model.dtype,
                                 attn_implementation=job.model.attn_implementation,
                                 check_processor=suite.check_processor)
    for adapter in dict.fromkeys(v.adapter for v in variants if v.adapter):
        check_adapter_fits(adapter, model)  # before any variant runs
    return model, processor, suite, variants


def _base_name(job: Job) -> str:
    return str(Path(job.model.base).resolve()) if job.model.base else "embedded default (pvm_probe/assets/baseline)"


def run_job(job: Job, directory) -> list[dict]:
    """Open the job and fill `directory` with its records (resuming what is there)."""
    model, processor, suite, variants = open_job(job)
    return run(model, processor, suite, variants, directory, job.run, base=_base_name(job))


def report(job: Job, out) -> Path | None:
    """The whole report job: records in a hidden working folder beside `out`, then the report, then the folder
    replaces `out` whole. An interrupted run resumes from the working folder; records of a finished report
    at `out` that match this run are reused. Under several processes each generates its share of the records
    and process 0 alone publishes (the others return None)."""
    from .report.build import build_report, check_output_dir, publish, seed_from_previous, working_dir

    out = check_output_dir(out)
    model, processor, suite, variants = open_job(job)
    work = working_dir(out)
    state = process_state(model.device)
    with state.main_process_first():  # process 0 prepares the working folder and the lens; the others read them
        if state.is_main_process:
            seed_from_previous(out, work)
        lens = tuned_lens_for(model, processor, suite, work / LENS_DIR, job.run.batch_size) if job.tuned_lens else None
        if state.is_main_process:
            _discard_if_stale(work, describe(suite, variants, job.run, model, _base_name(job), lens))
    run(model, processor, suite, variants, work, job.run, base=_base_name(job), lens=lens)
    if not state.is_main_process:  # process 0 alone writes the report and publishes it
        return None
    build_report(work)
    return publish(work, out)


def _discard_if_stale(work: Path, description: dict) -> None:
    """Records left by another run (another base, suite or settings) are dropped: the run starts clean."""
    from .records import RECORDS, compatible

    if (work / RUN).is_file() and not compatible(work / RUN, description):
        (work / RUN).unlink()
        (work / RECORDS).unlink(missing_ok=True)


LENS_DIR = "tuned_lens"
CALIBRATION_REQUESTS = 8


def tuned_lens_for(model, processor, suite, directory: Path, batch_size: int = 8):
    """The base's tuned lens: the one saved in `directory` if it belongs to this base, else one trained on the
    base's own answers to the suite's calibration requests (never the evaluated ones) and saved there."""
    from .checkpoints import AdapterMismatchError
    from .probes.tuned_lens import LensData, TunedLens, record_generations
    from .runner import chat_inputs

    if directory.is_dir():
        try:
            return TunedLens.load(directory, model)
        except (AdapterMismatchError, OSError, InputError):
            shutil.rmtree(directory)
    requests = suite.calibration(CALIBRATION_REQUESTS)
    parts = [record_generations(model, chat_inputs(processor, requests[s:s + batch_size], model.device),
                                max_new_tokens=max(suite.max_new_tokens(r) for r in requests[s:s + batch_size]),
                                do_sample=False)
             for s in range(0, len(requests), batch_size)]
    lens = TunedLens.for_model(model)
    lens.fit(model, LensData.cat(parts))
    lens.save(directory)
    return lens


def _records_job(job: Job, records_dir) -> dict | None:
    """The job's metrics (None in any process but process 0, which gathers every process's records)."""
    from accelerate.utils import broadcast_object_list

    from .loading import resolve_device
    from .report.build import metrics_of

    state = process_state(resolve_device(job.model.device))
    with ExitStack() as stack:
        if records_dir is None:  # process 0's temporary folder, shared by every process
            temporary = tempfile.TemporaryDirectory(prefix="pvm_probe_records_") if state.is_main_process else None
            records_dir = broadcast_object_list([stack.enter_context(temporary) if temporary else None])[0]
        run_job(job, records_dir)
        return metrics_of(records_dir)[0] if state.is_main_process else None


def paint(job: Job, records_dir=None) -> dict | None:
    """Claims by quarter of the answer for each variant (no probes); metrics.json's shape."""
    job.run.probes = False
    return _records_job(job, records_dir)


def probe(job: Job, records_dir=None) -> dict | None:
    """The same with the probes: attention mass, dilution fits, LogitLens, PVM retrieval."""
    job.run.probes = True
    return _records_job(job, records_dir)
