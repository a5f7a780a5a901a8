"""CUDA preprocessing (docs/preprocess.md): one fused kernel launch for every camera of a batch.

- preprocess.cu: the kernels (one per input format and output type); cuda_compat.h lets g++ compile them.
- launcher.CudaPreprocessor: runs them on a GPU (pycuda on the vehicle, CuPy elsewhere).
- shim.ShimPreprocessor: runs the same source on the CPU (tests, CI without a GPU).
- nvcc: ahead-of-time cubins and the ptxas register / spill report.
"""
