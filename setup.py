"""Install dali-pixmix: `pip install -e .` (add `[test]` for the test suite)."""
from setuptools import find_packages, setup

setup(
    name="dali-pixmix",
    version="0.1.0",
    description="PixMix data augmentation on a DALI GPU pipeline, with distributed "
    "ImageNet training and the full ML-safety evaluation suite.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.9",
    packages=find_packages(include=["dali_pixmix", "dali_pixmix.*"]),
    package_data={"dali_pixmix": ["assets/*.txt"]},
    install_requires=[
        # the tested minor versions (docker/requirements.txt pins the exact ones); the README's
        # Quickstart installs their CUDA 12 build for drivers older than 580
        "torch>=2.14,<2.15",
        "torchvision>=0.29,<0.30",
        "numpy",
        "pyyaml",
        "nvidia-dali-cuda120>=2.0,<3",
        "pillow",
        "tqdm",
        "scikit-learn",
        "matplotlib",
        "av",
    ],
    extras_require={
        "test": ["pytest>=7"],
        "tensorboard": ["tensorboard"],
    },
)
