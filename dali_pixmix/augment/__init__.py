"""The PixMix augmentation: batched ops with PIL semantics, the batched PixMix procedure, and
the per-image PIL oracle the tests and benchmarks compare against."""
