"""Benchmarks and the GPU check: `xpgan bench drr|prep|loader|gpu` and the scripts beside them (bench/*.sh)."""
