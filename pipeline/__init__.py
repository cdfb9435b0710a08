"""resnet-edge pipeline: stages from a torch model to verified TFLite files. Heavy tools load inside their stage."""
