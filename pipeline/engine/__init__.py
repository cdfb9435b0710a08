"""The tools the stages use: runners (torch / ONNX / TFLite), checkpoints, evaluation and gates, the architecture
summary, memory figures, the three converters (torch_to_onnx, onnx_to_tflite, torch_to_tflite) and the stage contract
(engine.stage). No stage of the chain lives here."""
