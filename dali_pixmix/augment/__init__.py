"""The training augmentations: batched ops with PIL semantics (``ops``), the batched PixMix
procedure (``pixmix``; two execution strategies: ``grouped`` for CPU, ``dense`` - a fixed kernel
sequence - for CUDA), the comparison methods (``augmix``, ``cutout``, ``label_mixing``; named in
``methods``), and the per-image PIL oracle the tests and benchmarks compare against
(``pil_oracle``)."""
