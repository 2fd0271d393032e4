"""PVM training: Stage I (SFT with transformers.Trainer) and Stage II (GRPO with TRL, verifiable rewards).

    config.py      the run as dataclasses (TrainJob, AdapterSpec, DataSpec, StageIConfig, StageIIConfig)
    plan.py        every check that needs no weights, before any load
    run.py         train(job) -> TrainResult: load, attach, train, write the adapter folder whole
    cli.py         `pvm-probe train-pvm` arguments -> TrainJob (imports nothing heavy)
    data.py        data files (JSON, JSONL, parquet): validated up front, read lazily
    collate.py     Stage I batches: answer-only labels, --max-length, --max-pixels
    sft.py         Stage I trainer pieces (loss, backbone visual dropout, what trains)
    grpo.py        Stage II trainer, per-completion sampling streams (sampling.py)
    rewards.py     format, exact, numeric, scenes, world-format, world-accuracy, module:function
    prompts.py     Stage II prompts (data file, scenes suite, painter world), made on demand
    world_data.py  the painter world as Stage I data and Stage II prompts
    summary.py     what the command prints at the end
"""
