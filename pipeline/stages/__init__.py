"""The chain's stages and nothing else, one module (or package) each, each with its declaration (STAGE) beside its
code: train, export, convert, litert, quantize, prune_structured, prune_magnitude, explain, benchmark, report,
bundle. pipeline.chain orders them."""
