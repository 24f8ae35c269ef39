"""Finding, checking and decoding pictures, the bottom of the data side: image discovery, DALI
file lists, header checks and naming undecodable files, the decoder settings, ImageNet
normalisation, and the generated demo dataset. The mixing bank (`mixing/`) and the pipelines
(`pipelines/`) build on it."""
