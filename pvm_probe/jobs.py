"""The jobs behind the commands, as library calls with dataclass configs: report, paint, probe.

    job = Job(model=ModelSpec(base="/models/Qwen3-VL-8B-Instruct"), suite=SuiteSpec(scenes=200),
              adapters=["pvm-8b"])
    report(job, "out/report")          # records -> metrics.json, figures, report.html
    metrics = paint(job)               # claims by quarter, no probes
    metrics = probe(job)               # the same with the probes

Everything is checked before the weights load: the suite's settings and data, the adapters, the output
folder, whether the suite can run on the base (the painter world needs the world's own tokenizer), and each
remedy's options, by building the remedy on a weightless copy of the base (`check_remedies`).
The suite defaults to `world` for the embedded base and to `scenes` for any other; the shipped adapters
are offered only to the base they were trained on.
"""

from __future__ import annotations

import shutil
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForImageTextToText

from .checkpoints import check_fingerprint, read_adapter_meta, resolve_adapter, shipped_adapter_names
from .errors import AdapterMismatchError, InputError
from .loading import BASELINE_DIR, check_model_dir, load_base, resolve_device
from .placement import all_placements, layer_scores, measure_mass
from .probes.tuned_lens import LensData, TunedLens, record_generations
from .processes import process_state
from .records import RECORDS, RUN, compatible
from .registry import REMEDIES, SUITES
from .report.benchmarks import write_benchmarks
from .report.build import build_report, check_output_dir, metrics_of, publish, seed_from_previous, working_dir
from .runner import RunConfig, describe, run
from .specs import ModelSpec, SuiteSpec
from .suites.inputs import chat_inputs
from .variants import BASELINE, Variant, adapter_variants, plan


@dataclass
class Job:
    """One report, paint or probe job: the model, the suite, the variants to compare with the baseline
    (adapters, remedies, each memory adapter's controls) and how the runner runs them (`run`)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    suite: SuiteSpec = field(default_factory=SuiteSpec)
    adapters: list | None = None  # None: the shipped adapters for the embedded base, none for another base
    remedies: list = field(default_factory=list)  # training-free remedies (registry names) run on the baseline
    controls: bool = True  # gates off and swapped image for every memory adapter
    baseline: bool = True
    only: str | None = None  # run a single variant: "adapter", "gates_off" or "swapped_image"
    tuned_lens: bool = True  # report: fit (or reuse) a tuned lens of the base and read it beside the LogitLens
    run: RunConfig = field(default_factory=RunConfig)


def make_suite(spec: SuiteSpec, base=None):
    """The suite a spec names, checking that it takes every setting given (`Suite.options`)."""
    name = spec.resolved_name(base)
    cls = SUITES.get(name)
    given = spec.given()
    foreign = sorted(set(given) - set(cls.options))
    if foreign:
        flags = ", ".join("--" + f.replace("_", "-") for f in foreign)
        raise InputError(f"{flags} {'does' if len(foreign) == 1 else 'do'} not apply to --suite {name}")
    return cls(**given)


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
    return plan(adapters, controls=job.controls, remedies=job.remedies, baseline=job.baseline)


def _single(job: Job, adapters: list) -> list[Variant]:
    if job.only == "adapter":  # each named adapter as it is and each named remedy, or the baseline alone
        chosen = [v for a in adapters for v in adapter_variants(a, controls=False)]
        return chosen + plan(remedies=job.remedies, baseline=False) or [BASELINE]
    if len(adapters) != 1:
        raise InputError(f"{job.only.replace('_', ' ')} needs exactly one adapter (--pvm)")
    chosen = [v for v in adapter_variants(adapters[0]) if v.control == job.only]
    if not chosen:
        raise InputError(f"{adapters[0]} is an MLP control adapter: the image controls are for memory adapters")
    return chosen


LIBRARY_ONLY = "pass allow_other_weights=True to load it anyway"


def check_adapter_fits(adapter, model) -> None:
    """A one-line AdapterMismatchError, naming the adapter (`--pvm`), if it was trained on another base than
    `model`. Other weights of the same shape are refused too: the gates were learned on the recorded ones."""
    try:
        check_fingerprint(read_adapter_meta(adapter, check_weights=False)["base"], model)
    except AdapterMismatchError as err:
        advice = ("run it on the base it was trained on, or train an adapter on this base (train-pvm --base); "
                  "from Python, load_pvm(..., allow_other_weights=True) loads it anyway")
        message = str(err).replace(f"; {LIBRARY_ONLY}", f": {advice}")
        raise AdapterMismatchError(f"--pvm {adapter}: {message}") from None


def check_remedies(variants: list[Variant], base) -> None:
    """Build every remedy of `variants` on the base's config on the meta device (no weights, no memory): options
    that do not fit the model, such as a layer it lacks or a negative strength, fail now in one line."""
    remedies = [v for v in variants if v.remedy]
    if not remedies:
        return
    config = AutoConfig.from_pretrained(check_model_dir(base or BASELINE_DIR), local_files_only=True)
    with torch.device("meta"):
        skeleton = AutoModelForImageTextToText.from_config(config)
    for variant in remedies:
        try:
            REMEDIES.get(variant.remedy)(skeleton, **variant.options)
        except ValueError as err:  # InputError, or a layer-range ValueError from the backbone table
            raise InputError(f"--remedy {variant.name}: {err}") from None


def open_job(job: Job):
    """(model, processor, suite, variants): everything checked, then the base loaded."""

    variants = variants_of(job)  # first: typed remedy options and adapter names fail before a suite reads its data
    check_remedies(variants, job.model.base)
    suite = make_suite(job.suite, job.model.base)
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
    records = run(model, processor, suite, variants, directory, job.run, base=_base_name(job))
    if records:  # the main process
        write_benchmarks(suite, records, directory)
    return records


def report(job: Job, out) -> Path | None:
    """The whole report job: records in a hidden working folder beside `out`, then the report, then the folder
    replaces `out` whole. An interrupted run resumes from the working folder; records of a finished report
    at `out` that match this run are reused. Under several processes each generates its share of the records
    and process 0 alone publishes (the others return None)."""

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
    records = run(model, processor, suite, variants, work, job.run, base=_base_name(job), lens=lens)
    if not state.is_main_process:  # process 0 alone writes the report and publishes it
        return None
    write_benchmarks(suite, records, work)
    build_report(work)
    return publish(work, out)


def _discard_if_stale(work: Path, description: dict) -> None:
    """Records left by another run (another base, suite or settings) are dropped: the run starts clean."""

    if (work / RUN).is_file() and not compatible(work / RUN, description):
        (work / RUN).unlink()
        (work / RECORDS).unlink(missing_ok=True)


LENS_DIR = "tuned_lens"
CALIBRATION_REQUESTS = 8


def tuned_lens_for(model, processor, suite, directory: Path, batch_size: int = 8):
    """The base's tuned lens: the one saved in `directory` if it belongs to this base, else one trained on the
    base's own answers to the suite's calibration requests (never the evaluated ones) and saved there."""

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
    job.run.probes = job.run.probes or True
    return _records_job(job, records_dir)


def measure_profile(job, n_blocks: int = 2) -> dict:
    """Load a job's base, measure its profile on the job's suite, and return every strategy's layers with what
    they ranked."""
    job.adapters, job.remedies = [], []
    _check_blocks(job.model.base, n_blocks)
    model, processor, suite, _ = open_job(job)
    mass = measure_mass(model, processor, suite, job.run.batch_size, job.run.max_new_tokens)  # [L, T]
    return {"base": job.model.base or "embedded default", "suite": suite.settings(), "blocks": n_blocks,
            "layers": {s: list(v) for s, v in all_placements(mass, n_blocks).items()}, **layer_scores(mass)}


def _check_blocks(base, n_blocks: int) -> None:
    """A one-line InputError, from the base's config.json alone, when it has fewer layers than blocks."""
    config = AutoConfig.from_pretrained(check_model_dir(base or BASELINE_DIR), local_files_only=True)
    layers = config.get_text_config().num_hidden_layers
    if not 0 < n_blocks <= layers:
        raise InputError(f"--blocks {n_blocks}: cannot place {n_blocks} blocks in a {layers}-layer model "
                         f"(at most {layers})")
