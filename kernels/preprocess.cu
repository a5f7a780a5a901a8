// Fused camera preprocessing (docs/preprocess.md): for every camera of a batch, in one launch,
// sample the composite remap table bilinearly (weights quantised to 1/32 pixel) straight from the raw
// frame, convert YUV to RGB, normalise and write planar [N, 3, H, W] float16 / float32, RGB or BGR planes.
//
// One kernel per (input format, output type): preprocess_{nv12,yuyv,bgr8,rgb8}_{f16,f32}.
// The same file is compiled by nvcc / NVRTC for the GPU and by g++ (-x c++, through cuda_compat.h) for
// the CPU shim, so it holds kernels only: no launches, no shared memory, barriers or atomics.
//
// Any grid and block shape is correct (grid-stride loops: z over cameras, y over rows, x over columns);
// the launchers use blocks of 32 x 8 x 1 threads and a grid covering one camera's output per z-slice.
// Requirements on every camera's source (kernels/batch.py stages frames so): the frame starts 4-byte aligned
// and its row pitch `stride` is a multiple of 4 bytes (so 32-bit loads of YUYV / BGR words and 16-bit
// loads of NV12 UV pairs are aligned), and stride * rows < 2^31.
#include "cuda_compat.h"

// One camera of the batch. Layout mirrored by kernels/batch.py (CAMERA_DTYPE): 64 bytes.
struct PreprocessCamera {
    unsigned long long src;    // address of the raw frame's first row
    unsigned long long table;  // address of float2[out_h * out_w]: source (x, y) per output pixel, -1 = pad
    int width, height;         // source frame size in pixels
    int stride;                // source row pitch in bytes
    int batch_index;           // n of out[n, c, v, u]
    // YUV only (perception.preprocess.common.YuvCoefficients): Y' = (Y - y_offset) * y_scale,
    // Pb = (U - 128) * c_scale, Pr = (V - 128) * c_scale, R = Y' + r_v Pr, G = Y' + g_u Pb + g_v Pr,
    // B = Y' + b_u Pb.
    float y_offset, y_scale, c_scale, r_v;
    float g_u, g_v, b_u, unused;
};

enum SourceFormat { FORMAT_NV12, FORMAT_YUYV, FORMAT_BGR8, FORMAT_RGB8 };

// The quantised bilinear footprint of one plane: clamped tap columns / rows and 1/32-step weights.
struct Footprint {
    int xa, xb, ya, yb;
    float w00, w01, w10, w11;
};

// q = round_half_even(coordinate * 32), computed by the caller (exact: the factors are powers of 2).
__device__ __forceinline__ Footprint footprint(int qx, int qy, int plane_w, int plane_h) {
    const int x0 = qx >> 5, y0 = qy >> 5;  // arithmetic shift = floor for negative chroma coordinates
    const float ax = (float)(qx & 31) * (1.0f / 32.0f);
    const float ay = (float)(qy & 31) * (1.0f / 32.0f);
    Footprint f;
    f.xa = min(max(x0, 0), plane_w - 1);
    f.xb = min(max(x0 + 1, 0), plane_w - 1);
    f.ya = min(max(y0, 0), plane_h - 1);
    f.yb = min(max(y0 + 1, 0), plane_h - 1);
    f.w00 = (1.0f - ay) * (1.0f - ax);
    f.w01 = (1.0f - ay) * ax;
    f.w10 = ay * (1.0f - ax);
    f.w11 = ay * ax;
    return f;
}

__device__ __forceinline__ float blend(const Footprint& f, unsigned int p00, unsigned int p01,
                                       unsigned int p10, unsigned int p11) {
    return (float)p00 * f.w00 + (float)p01 * f.w01 + (float)p10 * f.w10 + (float)p11 * f.w11;
}

__device__ __forceinline__ unsigned int load_u32(const unsigned char* p) {
    return __ldg(reinterpret_cast<const unsigned int*>(p));
}

// 24 bits of two adjacent pixels (xa, xb = xa or xa + 1) of a packed 3-byte row, from the aligned
// 32-bit words that hold them. Only the words that hold needed bytes are read (no read past the row).
__device__ __forceinline__ void load_pixel_pair3(const unsigned char* row, int xa, int xb,
                                                 unsigned int& pa, unsigned int& pb) {
    const int byte_a = 3 * xa;
    const unsigned char* word = row + (byte_a & ~3);
    const unsigned int sa = byte_a & 3;             // offset of pixel a in word 0
    const unsigned int sb = sa + 3u * (xb - xa);    // offset of pixel b from word 0 (0..6)
    const unsigned int last = sb + 2u;              // last byte needed (2..8)
    const unsigned int w0 = load_u32(word);
    const unsigned int w1 = last >= 4u ? load_u32(word + 4) : 0u;
    const unsigned int w2 = last >= 8u ? load_u32(word + 8) : 0u;
    pa = __funnelshift_r(w0, w1, 8u * sa);
    pb = sb < 4u ? __funnelshift_r(w0, w1, 8u * sb) : __funnelshift_r(w1, w2, 8u * (sb - 4u));
}

__device__ __forceinline__ unsigned int byte_of(unsigned int word, int k) { return (word >> (8 * k)) & 0xFFu; }

// Colour of source point (x, y) (valid: inside the frame) in 0..255 units, RGB order.
template <int FORMAT>
__device__ __forceinline__ void sample_rgb(const PreprocessCamera& cam, float x, float y,
                                           float& r, float& g, float& b) {
    const unsigned char* __restrict__ src = reinterpret_cast<const unsigned char*>(cam.src);
    const int stride = cam.stride;
    const int qx = __float2int_rn(x * 32.0f), qy = __float2int_rn(y * 32.0f);
    const Footprint f = footprint(qx, qy, cam.width, cam.height);
    const unsigned char* row_a = src + f.ya * stride;
    const unsigned char* row_b = src + f.yb * stride;

    if (FORMAT == FORMAT_BGR8 || FORMAT == FORMAT_RGB8) {
        unsigned int a0, a1, b0, b1;  // pixels (xa, ya), (xb, ya), (xa, yb), (xb, yb)
        load_pixel_pair3(row_a, f.xa, f.xb, a0, a1);
        load_pixel_pair3(row_b, f.xa, f.xb, b0, b1);
        const int kr = FORMAT == FORMAT_RGB8 ? 0 : 2, kb = 2 - kr;
        r = blend(f, byte_of(a0, kr), byte_of(a1, kr), byte_of(b0, kr), byte_of(b1, kr));
        g = blend(f, byte_of(a0, 1), byte_of(a1, 1), byte_of(b0, 1), byte_of(b1, 1));
        b = blend(f, byte_of(a0, kb), byte_of(a1, kb), byte_of(b0, kb), byte_of(b1, kb));
        return;
    }

    float luma, cb, cr;
    if (FORMAT == FORMAT_NV12) {
        luma = blend(f, __ldg(row_a + f.xa), __ldg(row_a + f.xb), __ldg(row_b + f.xa), __ldg(row_b + f.xb));
        // Chroma (i, j) sits at luma (2i, 2j + 0.5): sampled at (x / 2, (y - 0.5) / 2) on the W/2 x H/2 plane.
        const Footprint c = footprint(__float2int_rn(x * 16.0f), __float2int_rn((y - 0.5f) * 16.0f),
                                      cam.width >> 1, cam.height >> 1);
        const unsigned char* uv = src + cam.height * stride;
        const uchar2 p00 = __ldg(reinterpret_cast<const uchar2*>(uv + c.ya * stride) + c.xa);
        const uchar2 p01 = __ldg(reinterpret_cast<const uchar2*>(uv + c.ya * stride) + c.xb);
        const uchar2 p10 = __ldg(reinterpret_cast<const uchar2*>(uv + c.yb * stride) + c.xa);
        const uchar2 p11 = __ldg(reinterpret_cast<const uchar2*>(uv + c.yb * stride) + c.xb);
        cb = blend(c, p00.x, p01.x, p10.x, p11.x);
        cr = blend(c, p00.y, p01.y, p10.y, p11.y);
    } else {  // FORMAT_YUYV: 32-bit macropixels Y0 U Y1 V; chroma (i, j) sits at luma (2i, j)
        const uchar4* mac_a = reinterpret_cast<const uchar4*>(row_a);
        const uchar4* mac_b = reinterpret_cast<const uchar4*>(row_b);
        const uchar4 la0 = __ldg(mac_a + (f.xa >> 1)), la1 = __ldg(mac_a + (f.xb >> 1));
        const uchar4 lb0 = __ldg(mac_b + (f.xa >> 1)), lb1 = __ldg(mac_b + (f.xb >> 1));
        const bool odd_a = f.xa & 1, odd_b = f.xb & 1;
        luma = blend(f, odd_a ? la0.z : la0.x, odd_b ? la1.z : la1.x, odd_a ? lb0.z : lb0.x,
                     odd_b ? lb1.z : lb1.x);
        // Same rows as luma (cy = y), so only the column footprint differs.
        const Footprint c = footprint(__float2int_rn(x * 16.0f), qy, cam.width >> 1, cam.height);
        const uchar4 ca0 = __ldg(mac_a + c.xa), ca1 = __ldg(mac_a + c.xb);
        const uchar4 cb0 = __ldg(mac_b + c.xa), cb1 = __ldg(mac_b + c.xb);
        cb = blend(c, ca0.y, ca1.y, cb0.y, cb1.y);
        cr = blend(c, ca0.w, ca1.w, cb0.w, cb1.w);
    }
    const float yp = (luma - cam.y_offset) * cam.y_scale;
    const float pb = (cb - 128.0f) * cam.c_scale;
    const float pr = (cr - 128.0f) * cam.c_scale;
    r = fminf(fmaxf(yp + cam.r_v * pr, 0.0f), 255.0f);
    g = fminf(fmaxf(yp + cam.g_u * pb + cam.g_v * pr, 0.0f), 255.0f);
    b = fminf(fmaxf(yp + cam.b_u * pb, 0.0f), 255.0f);
}

__device__ __forceinline__ void store(float* p, float v) { *p = v; }
__device__ __forceinline__ void store(fp16* p, float v) { *p = to_fp16(v); }

// Colour c of a pixel = value_c * scale_c + bias_c (perception.preprocess.common.normalization_affine,
// RGB order); pad pixels = pad_c. The R, G, B results go to planes 0, 1, 2, or 2, 1, 0 when `bgr`.
template <int FORMAT, typename Out>
__device__ __forceinline__ void preprocess(const PreprocessCamera* __restrict__ cams, int num_cams,
                                           Out* __restrict__ out, int out_w, int out_h,
                                           float scale_r, float scale_g, float scale_b,
                                           float bias_r, float bias_g, float bias_b, int bgr,
                                           float pad_r, float pad_g, float pad_b) {
    const int plane = out_w * out_h;
    for (int n = blockIdx.z * blockDim.z + threadIdx.z; n < num_cams; n += blockDim.z * gridDim.z) {
        const PreprocessCamera cam = cams[n];
        const float2* __restrict__ table = reinterpret_cast<const float2*>(cam.table);
        Out* __restrict__ dst = out + (unsigned long long)cam.batch_index * 3 * plane;
        const float x_max = (float)(cam.width - 1), y_max = (float)(cam.height - 1);
        for (int v = blockIdx.y * blockDim.y + threadIdx.y; v < out_h; v += blockDim.y * gridDim.y) {
            for (int u = blockIdx.x * blockDim.x + threadIdx.x; u < out_w; u += blockDim.x * gridDim.x) {
                const int i = v * out_w + u;
                const float2 p = __ldg(table + i);
                float o_r = pad_r, o_g = pad_g, o_b = pad_b;
                // Written so that NaN coordinates count as pad too.
                if (p.x >= 0.0f && p.x <= x_max && p.y >= 0.0f && p.y <= y_max) {
                    float r, g, b;
                    sample_rgb<FORMAT>(cam, p.x, p.y, r, g, b);
                    o_r = r * scale_r + bias_r;
                    o_g = g * scale_g + bias_g;
                    o_b = b * scale_b + bias_b;
                }
                // swapping the values (not the plane addresses) costs no registers across the loops
                store(dst + i, bgr ? o_b : o_r);
                store(dst + plane + i, o_g);
                store(dst + 2 * plane + i, bgr ? o_r : o_b);
            }
        }
    }
}

#define PREPROCESS_KERNEL(NAME, FORMAT, OUT)                                                             \
    extern "C" __global__ void NAME(const PreprocessCamera* __restrict__ cams, int num_cams,            \
                                    OUT* __restrict__ out, int out_w, int out_h, float scale_r,          \
                                    float scale_g, float scale_b, float bias_r, float bias_g,            \
                                    float bias_b, int bgr, float pad_r, float pad_g, float pad_b) {      \
        preprocess<FORMAT, OUT>(cams, num_cams, out, out_w, out_h, scale_r, scale_g, scale_b, bias_r,    \
                                bias_g, bias_b, bgr, pad_r, pad_g, pad_b);                               \
    }

PREPROCESS_KERNEL(preprocess_nv12_f16, FORMAT_NV12, fp16)
PREPROCESS_KERNEL(preprocess_nv12_f32, FORMAT_NV12, float)
PREPROCESS_KERNEL(preprocess_yuyv_f16, FORMAT_YUYV, fp16)
PREPROCESS_KERNEL(preprocess_yuyv_f32, FORMAT_YUYV, float)
PREPROCESS_KERNEL(preprocess_bgr8_f16, FORMAT_BGR8, fp16)
PREPROCESS_KERNEL(preprocess_bgr8_f32, FORMAT_BGR8, float)
PREPROCESS_KERNEL(preprocess_rgb8_f16, FORMAT_RGB8, fp16)
PREPROCESS_KERNEL(preprocess_rgb8_f32, FORMAT_RGB8, float)
