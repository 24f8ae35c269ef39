"""The PixMix mixing set: generated fractals, contact sheets, and the tensor bank the training
pipeline draws mixing pictures from."""
