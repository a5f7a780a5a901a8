// CPU launcher for the kernels of preprocess.cu (built by kernels/shim.py with g++ -x c++ -fopenmp).
// Runs a launch the way the GPU would: every (block, thread) of the grid executes the kernel once
// with blockIdx / threadIdx / blockDim / gridDim set. Blocks are spread over OpenMP threads; the
// kernels use no shared memory or barriers, so the threads of a block can run one after another.
#include "preprocess.cu"

namespace {

template <typename... Args>
void host_launch(void (*kernel)(Args...), dim3 grid, dim3 block, int num_threads, Args... args) {
    const long long blocks = (long long)grid.x * grid.y * grid.z;
#pragma omp parallel for schedule(dynamic, 1) num_threads(num_threads)
    for (long long id = 0; id < blocks; ++id) {
        gridDim = grid;
        blockDim = block;
        blockIdx.x = (unsigned)(id % grid.x);
        blockIdx.y = (unsigned)((id / grid.x) % grid.y);
        blockIdx.z = (unsigned)(id / ((long long)grid.x * grid.y));
        for (unsigned z = 0; z < block.z; ++z)
            for (unsigned y = 0; y < block.y; ++y)
                for (unsigned x = 0; x < block.x; ++x) {
                    threadIdx.x = x;
                    threadIdx.y = y;
                    threadIdx.z = z;
                    kernel(args...);
                }
    }
}

}  // namespace

// shim_<kernel>(grid xyz, block xyz, OpenMP threads, then the kernel's own arguments).
#define SHIM_LAUNCHER(NAME, OUT)                                                                     \
    extern "C" void shim_##NAME(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,    \
                                unsigned bz, int num_threads, const PreprocessCamera* cams,         \
                                int num_cams, OUT* out, int out_w, int out_h, float scale_r,        \
                                float scale_g, float scale_b, float bias_r, float bias_g,           \
                                float bias_b, int bgr, float pad_r, float pad_g, float pad_b) {     \
        host_launch(NAME, dim3{gx, gy, gz}, dim3{bx, by, bz}, num_threads, cams, num_cams, out,      \
                    out_w, out_h, scale_r, scale_g, scale_b, bias_r, bias_g, bias_b, bgr, pad_r,    \
                    pad_g, pad_b);                                                                  \
    }

SHIM_LAUNCHER(preprocess_nv12_f16, fp16)
SHIM_LAUNCHER(preprocess_nv12_f32, float)
SHIM_LAUNCHER(preprocess_yuyv_f16, fp16)
SHIM_LAUNCHER(preprocess_yuyv_f32, float)
SHIM_LAUNCHER(preprocess_bgr8_f16, fp16)
SHIM_LAUNCHER(preprocess_bgr8_f32, float)
SHIM_LAUNCHER(preprocess_rgb8_f16, fp16)
SHIM_LAUNCHER(preprocess_rgb8_f32, float)
