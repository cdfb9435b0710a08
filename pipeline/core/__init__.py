"""The base every layer stands on: errors, atomic writes, the run directory's paths, result records, the precision
rule, host facts, console routing, and the artifacts' names (core.names). Imports nothing above it."""
