"""The PixMix augmentation: batched ops with PIL semantics, the batched PixMix procedure (two
execution strategies: ``grouped`` for CPU, ``dense`` - a fixed kernel sequence - for CUDA), and
the per-image PIL oracle the tests and benchmarks compare against."""
