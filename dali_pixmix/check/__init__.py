"""A self-check of the machine it runs on: environment, functional checks and throughput.

`tools/check_gpu.py` runs it. Each check and measurement runs in its own child process with a
time limit, so a crash, a hang or a poisoned CUDA context in one never stops the others:

- `environment`: Python, torch, torchvision, DALI, nvImageCodec, nvJPEG (versions and the
  files loaded), PyAV, driver, GPUs, NCCL, and warnings for known-bad combinations;
- `functional`: the GPU data path (the decoding libraries, nvJPEG decode incl. the training
  decoder's ROI decode on the GPU, the training pipeline with PixMix, no host synchronisation
  in the PixMix stage, ImageNet-P video decode, evaluation on GPU vs CPU);
- `compute`: AMP with channels_last, DDP over NCCL, the lifetime of DALI's zero-copy batches
  under a compiled float32 model;
- `throughput`: images/s of the PixMix stage, the training decoder, the pipeline (with and
  without a CUDA graph), training and evaluation, each beside a baseline measured in the same
  run;
- `report`: the console table, `check_gpu.json` and `check_gpu.md`;
- `harness` (child processes, time limits), `settings` (sizes per machine and mode),
  `fixtures` (generated pictures, videos and mixing bank, or the user's), `cli` (the command).
Without CUDA the CPU subset runs (small sizes) and the CUDA checks are skipped with a reason;
on a CUDA machine a missing DALI, nvImageCodec or nvJPEG fails the run (exit status 1).
"""
