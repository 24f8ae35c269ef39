"""dali-pixmix: PixMix on a DALI pipeline, distributed training and safety evaluation."""

__version__ = "0.1.0"
