"""Every stage's cache key: the config keys its result depends on (the rest of the key is its inputs' content). A
change to any of them reruns that stage and what reads its files; a change to NEUTRAL_KEYS reruns nothing."""

# What a training result depends on: the train stage's cache key, and (less the runtime-only keys in
# RESUMABLE_CHANGES) what a resume must keep as it was.
TRAIN_KEYS = frozenset({
    "model", "width", "stem", "shortcut", "zero_init_residual", "num_classes", "in_channels", "data_source",
    "data_root", "image_size", "val_size", "seed", "epochs", "min_steps", "batch_size", "optimizer", "lr", "momentum",
    "weight_decay", "schedule", "warmup_epochs", "label_smoothing", "augment", "random_erasing", "ema", "device",
    "amp", "channels_last", "compile", "train_subset", "eval_subset", "weights"})
RESUMABLE_CHANGES = frozenset({"device", "amp", "channels_last", "compile", "data_root", "weights", "eval_subset"})

# What an evaluation (the test split), a calibration (the training split's subset) and a gate depend on.
EVAL_KEYS = frozenset({"data_source", "data_root", "image_size", "eval_subset", "num_classes", "in_channels"})
CALIB_KEYS = frozenset({"data_source", "data_root", "image_size", "val_size", "calib_size", "seed"})
GATE_KEYS = frozenset({"max_int8_drop", "quant_fallback", "max_float_layers", "explain_images"})  # the gate, and
# what quant_fallback does when an int8 file fails it
FINETUNE_KEYS = frozenset({"batch_size", "optimizer", "momentum", "weight_decay", "label_smoothing", "augment",
                           "finetune_subset", "train_subset", "seed", "device", "val_size", "kd_alpha",
                           "kd_temperature"})
# Keys that change no stage's result: where the run lives, how fast it goes, notes.
NEUTRAL_KEYS = frozenset({"name", "runs_dir", "resume", "threads", "workers", "extra", "preset", "prune_method",
                          "run_structured", "run_magnitude", "amp", "channels_last", "compile"})  # run_litert: a key
# of the prune stages (their outputs depend on it) and the switch of the litert stage

# One set per stage, in the chain's order.
EXPORT_KEYS = EVAL_KEYS | {"dynamic_batch"}
CONVERT_KEYS = EVAL_KEYS | CALIB_KEYS | GATE_KEYS
LITERT_KEYS = EVAL_KEYS | CALIB_KEYS | GATE_KEYS | {"pt2e_algorithm"}
QUANTIZE_KEYS = EVAL_KEYS | CALIB_KEYS | GATE_KEYS | FINETUNE_KEYS | {
    "quant_preset", "ignored_scope", "qat", "qat_epochs", "qat_lr", "pt2e_algorithm", "run_litert"}
PRUNE_STRUCTURED_KEYS = EVAL_KEYS | CALIB_KEYS | GATE_KEYS | FINETUNE_KEYS | {
    "structured_ratio", "structured_importance", "structured_round_to", "structured_steps", "structured_epochs",
    "structured_lr", "pt2e_algorithm", "run_litert"}
PRUNE_MAGNITUDE_KEYS = EVAL_KEYS | CALIB_KEYS | GATE_KEYS | FINETUNE_KEYS | {
    "prune_ratio", "prune_epochs", "prune_lr", "pt2e_algorithm", "run_litert"}
EXPLAIN_KEYS = EVAL_KEYS | {"explain_images"}
BENCHMARK_KEYS = frozenset({"bench_runs", "bench_warmup", "bench_threads", "image_size", "in_channels", "data_source"})
REPORT_KEYS = frozenset({"max_size_mib"})
BUNDLE_KEYS = EVAL_KEYS | {"bundle_models", "bundle_images", "bench_runs", "bench_warmup", "max_size_mib"}
