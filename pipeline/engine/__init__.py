"""The machinery the stages share: the stage contract (contract: Stage, the cache key, the skip-or-rerun decision,
run_stage), the run context (context) and its manifest (manifest); runners (torch / ONNX / TFLite), checkpoints,
evaluation and gates, the architecture summary, memory figures, the three converters (torch_to_onnx, onnx_to_tflite,
torch_to_tflite), a converted file made and gated (gated), its float fallback (fallback) and per-layer int8 error
(layer_error). No stage of the chain lives here."""
