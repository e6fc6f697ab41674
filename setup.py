from setuptools import find_packages, setup

setup(
    name="tensorlite",
    version="0.1.0",
    description="A from-scratch reverse-mode autograd engine on NumPy/CuPy, and the GPT of "
                "'Let's build GPT' trained on Tiny Shakespeare with it",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tensorlite", "tensorlite.*", "gpt", "gpt.*"]),
    install_requires=["numpy>=1.24", "tqdm>=4.60"],
    extras_require={
        "cuda12": ["cupy-cuda12x>=13"],
        "cuda13": ["cupy-cuda13x>=13"],
        "test": ["pytest>=7", "hypothesis>=6", "matplotlib>=3.5",  # matplotlib: the picture tests
                 "nbclient>=0.7", "ipykernel>=6"],  # run notebooks/lets-build-gpt.ipynb in tests
        "bench": ["torch"],
        "viz": ["matplotlib>=3.5"],
        "docs": ["pdoc>=14"],  # python docs/api/generate.py writes the API reference in docs/api/
    },
)
