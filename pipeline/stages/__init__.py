"""The chain's stages, one module (or package) each, each with its declaration (STAGE) beside its code: train, export,
convert, litert, compress (quantize, prune_structured, prune_magnitude), explain, benchmark, report, bundle; fallback
repairs an int8 file for convert, litert and compress. pipeline.chain orders them."""
