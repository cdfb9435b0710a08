"""The config keys stages' results depend on, in the groups several stages share (each stage declares its own set,
Stage.keys: the config part of its cache key; the rest is its inputs' content). A change to any of them reruns that
stage and what reads its files; a change to NEUTRAL_KEYS reruns nothing."""

# What a training result depends on: the train stage's cache key, and (less the runtime-only keys in
# RESUMABLE_CHANGES) what a resume must keep as it was.
TRAIN_KEYS = frozenset(
    {
        "model",
        "width",
        "stem",
        "shortcut",
        "zero_init_residual",
        "num_classes",
        "in_channels",
        "data_source",
        "data_root",
        "image_size",
        "val_size",
        "seed",
        "epochs",
        "min_steps",
        "batch_size",
        "optimizer",
        "lr",
        "momentum",
        "weight_decay",
        "schedule",
        "warmup_epochs",
        "label_smoothing",
        "augment",
        "random_erasing",
        "ema",
        "device",
        "amp",
        "channels_last",
        "compile",
        "train_subset",
        "eval_subset",
        "weights",
    }
)
RESUMABLE_CHANGES = frozenset({"device", "amp", "channels_last", "compile", "data_root", "weights", "eval_subset"})

# What an evaluation (the test split), a calibration (the training split's subset) and a gate depend on.
EVAL_KEYS = frozenset({"data_source", "data_root", "image_size", "eval_subset", "num_classes", "in_channels"})
CALIB_KEYS = frozenset({"data_source", "data_root", "image_size", "val_size", "calib_size", "seed"})
# The gate, and what quant_fallback does when an int8 file fails it.
GATE_KEYS = frozenset({"max_int8_drop", "quant_fallback", "max_float_layers", "explain_images"})
# What a gated int8 file depends on: the images it is judged on, those it is calibrated on, and the gate.
GATED_KEYS = EVAL_KEYS | CALIB_KEYS | GATE_KEYS
FINETUNE_KEYS = frozenset(
    {
        "batch_size",
        "optimizer",
        "momentum",
        "weight_decay",
        "label_smoothing",
        "augment",
        "finetune_subset",
        "train_subset",
        "seed",
        "device",
        "val_size",
        "kd_alpha",
        "kd_temperature",
    }
)
# Keys that change no stage's result: where the run lives, how fast it goes, notes. A stage's switch (Stage.switch)
# is neutral too, unless a stage's result depends on it (run_litert: the prune stages make PT2E files with it).
NEUTRAL_KEYS = frozenset(
    {
        "name",
        "runs_dir",
        "resume",
        "threads",
        "workers",
        "extra",
        "preset",
        "prune_method",
        "amp",
        "channels_last",
        "compile",
    }
)
# fit's budgets: a config gives one of them (naming one on top of a run's saved config replaces the saved one)
BUDGET_KEYS = ("budget_ms", "budget_speedup", "budget_mib")
BUDGET_UNITS = {"budget_ms": "ms per image", "budget_speedup": "times faster than fp32", "budget_mib": "MiB"}
