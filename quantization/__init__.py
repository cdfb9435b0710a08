"""int8 quantization and pruning (NNCF, torch-pruning). The only package that imports nncf."""
