// One mask's whole step after its patch relevance R (g×g) is known, in one block (issue 13, "Dice on the S×S
// folded mask"): bilinear upsampling to S×S (torch, align_corners=False), min-max normalisation, Dice against
// the folded mask, and the backward of all three down to dL/dR. The generic device loop does this in some
// twenty passes over M·S² tensors (two of them one-hot rows); here each S×S pixel is recomputed from R in
// shared memory whenever it is needed, and only the folded mask and the resize weights are read from memory.
// Generic twin: `invert::resident`'s maps_of / dice_and_grad / normalize_backward / DeviceUpsample.
//
// r [M, g²]; folded [M, S²]; consts = rho [S²] ‖ area [M]; q: scratch [M, S, g];
// out [M, g² + 2] = dL/dR (times `scale`) ‖ loss ‖ valid (0 for a flat map).
// S = g·p for an integer p: a resize weight A[x, b] is non-zero only for x in [(b − 1)·p, (b + 2)·p).

#include <float.h>
#include <limits.h>

// The resize taps exactly as regionseek::resample::bilinear_taps computes them (no contraction into FMA).
__device__ __forceinline__ void tap(int o, int g, int s, int* lo, int* hi, float* frac) {
    const float scale = __fdiv_rn((float)g, (float)s);
    const float src = fmaxf(__fsub_rn(__fmul_rn(__fadd_rn((float)o, 0.5f), scale), 0.5f), 0.f);
    int l = (int)floorf(src);
    l = l < g - 1 ? l : g - 1;
    *lo = l;
    *hi = l + 1 < g - 1 ? l + 1 : g - 1;
    *frac = __fsub_rn(src, (float)l);
}

struct Taps {
    const int* lo;
    const int* hi;
    const float* frac;
};

// X[y, x] = A·R·Aᵀ at one pixel: along x first, then along y, as the generic products associate.
__device__ __forceinline__ float upsampled(const float* r, const Taps& t, int g, int y, int x) {
    const float fx = t.frac[x], fy = t.frac[y];
    const float* ra = r + t.lo[y] * g;
    const float* rb = r + t.hi[y] * g;
    const float row_a = (1.f - fx) * ra[t.lo[x]] + fx * ra[t.hi[x]];
    const float row_b = (1.f - fx) * rb[t.lo[x]] + fx * rb[t.hi[x]];
    return (1.f - fy) * row_a + fy * row_b;
}

// A[o, b]: the weight of grid cell b in output position o.
__device__ __forceinline__ float weight(const Taps& t, int o, int b) {
    return (t.lo[o] == b ? 1.f - t.frac[o] : 0.f) + (t.hi[o] == b ? t.frac[o] : 0.f);
}

// (value, index) pairs: the smaller value wins, and between equal values the first index (torch's argmin).
__device__ __forceinline__ void keep_min(float& v, int& i, float v2, int i2) {
    if (v2 < v || (v2 == v && i2 < i)) { v = v2; i = i2; }
}
__device__ __forceinline__ void keep_max(float& v, int& i, float v2, int i2) {
    if (v2 > v || (v2 == v && i2 < i)) { v = v2; i = i2; }
}

extern "C" __global__ void map_dice(const float* __restrict__ r, const float* __restrict__ folded,
                                    const float* __restrict__ consts, float* __restrict__ q,
                                    float* __restrict__ out, int g, int s, float scale) {
    extern __shared__ float shared[];
    __shared__ float warp_v[2][32];
    __shared__ int warp_i[2][32];
    __shared__ double warp_d[4][32];
    __shared__ float stats[9];  // lo, inv, a, b, to_min·inv, to_max·inv, loss, valid, range
    __shared__ int extremes[2];  // argmin, argmax
    const int m = blockIdx.x;
    const int tid = threadIdx.x, lane = tid % 32, warp = tid / 32, warps = (blockDim.x + 31) / 32;
    const int g2 = g * g, s2 = s * s, p = s / g;
    float* r_s = shared;
    int* lo_s = (int*)(r_s + g2);
    int* hi_s = lo_s + s;
    float* frac_s = (float*)(hi_s + s);
    for (int e = tid; e < g2; e += blockDim.x) r_s[e] = r[(size_t)m * g2 + e];
    for (int o = tid; o < s; o += blockDim.x) tap(o, g, s, &lo_s[o], &hi_s[o], &frac_s[o]);
    __syncthreads();
    const Taps t = {lo_s, hi_s, frac_s};
    const float* f = folded + (size_t)m * s2;
    const float* rho = consts;
    const float area = consts[s2 + m];

    // 1. the extremes and where they first occur
    float vmin = FLT_MAX, vmax = -FLT_MAX;
    int imin = INT_MAX, imax = INT_MAX;
    for (int px = tid; px < s2; px += blockDim.x) {
        const float x = upsampled(r_s, t, g, px / s, px % s);
        keep_min(vmin, imin, x, px);
        keep_max(vmax, imax, x, px);
    }
    for (int off = 16; off > 0; off /= 2) {
        keep_min(vmin, imin, __shfl_down_sync(0xffffffff, vmin, off), __shfl_down_sync(0xffffffff, imin, off));
        keep_max(vmax, imax, __shfl_down_sync(0xffffffff, vmax, off), __shfl_down_sync(0xffffffff, imax, off));
    }
    if (lane == 0) {
        warp_v[0][warp] = vmin; warp_i[0][warp] = imin;
        warp_v[1][warp] = vmax; warp_i[1][warp] = imax;
    }
    __syncthreads();
    if (tid == 0) {
        for (int w = 1; w < warps; ++w) {
            keep_min(warp_v[0][0], warp_i[0][0], warp_v[0][w], warp_i[0][w]);
            keep_max(warp_v[1][0], warp_i[1][0], warp_v[1][w], warp_i[1][w]);
        }
        const float span = warp_v[1][0] - warp_v[0][0];
        const bool valid = span > 0.f;
        stats[0] = warp_v[0][0];
        stats[1] = valid ? 1.f / span : 0.f;
        stats[7] = valid ? 1.f : 0.f;
        stats[8] = valid ? span : 1.f;
        extremes[0] = warp_i[0][0];
        extremes[1] = warp_i[1][0];
    }
    __syncthreads();
    const float lo = stats[0], inv = stats[1], range = stats[8];

    // 2. Dice's sums, and the mask's and the weights' own sums for the normalisation's backward
    float inter = 0.f, total = 0.f, fsum = 0.f, rsum = 0.f;
    for (int px = tid; px < s2; px += blockDim.x) {
        const float e = inv > 0.f ? (upsampled(r_s, t, g, px / s, px % s) - lo) / range : 0.f;
        inter += e * f[px];
        total += e * rho[px];
        fsum += f[px];
        rsum += rho[px];
    }
    double sums[4] = {inter, total, fsum, rsum};
    for (int k = 0; k < 4; ++k) {
        for (int off = 16; off > 0; off /= 2) sums[k] += __shfl_down_sync(0xffffffff, sums[k], off);
        if (lane == 0) warp_d[k][warp] = sums[k];
    }
    __syncthreads();
    if (tid == 0) {
        for (int k = 0; k < 4; ++k) {
            double acc = 0.0;
            for (int w = 0; w < warps; ++w) acc += warp_d[k][w];
            sums[k] = acc;
        }
        const double denom = sums[1] + area + 1.0, num = 2.0 * sums[0] + 1.0;
        const double a = -2.0 / denom * scale, b = num / (denom * denom) * scale;
        // Σ dE·E and Σ dE in closed form: dE = a·folded + b·rho
        const double de_e = a * sums[0] + b * sums[1], de = a * sums[2] + b * sums[3];
        stats[2] = (float)a;
        stats[3] = (float)b;
        stats[4] = (float)((de_e - de) * inv);  // to_min·inv
        stats[5] = (float)(-de_e * inv);        // to_max·inv
        stats[6] = (float)(1.0 - num / denom);
    }
    __syncthreads();
    const float a = stats[2], b = stats[3];

    // 3. q[y, c] = Σ_x dE[y, x]·inv·A[x, c]: the backward's product along x, the extremes' rows aside
    float* qm = q + (size_t)m * s * g;
    for (int e = tid; e < s * g; e += blockDim.x) {
        const int y = e / g, c = e % g;
        const int x0 = max(0, (c - 1) * p), x1 = min(s, (c + 2) * p);
        float acc = 0.f;
        for (int x = x0; x < x1; ++x) {
            const float w = weight(t, x, c);
            if (w != 0.f) acc += (a * f[y * s + x] + b * rho[y * s + x]) * inv * w;
        }
        qm[e] = acc;
    }
    __syncthreads();

    // 4. dR[a', c] = Σ_y A[y, a']·q[y, c], plus the first minimum's and maximum's one-hot terms
    const int at_min = extremes[0], at_max = extremes[1];
    const float c_min = stats[4], c_max = stats[5];
    float* o = out + (size_t)m * (g2 + 2);
    for (int e = tid; e < g2; e += blockDim.x) {
        const int row = e / g, c = e % g;
        const int y0 = max(0, (row - 1) * p), y1 = min(s, (row + 2) * p);
        float acc = 0.f;
        for (int y = y0; y < y1; ++y) {
            const float w = weight(t, y, row);
            if (w != 0.f) acc += w * qm[y * g + c];
        }
        acc += c_min * weight(t, at_min / s, row) * weight(t, at_min % s, c);
        acc += c_max * weight(t, at_max / s, row) * weight(t, at_max % s, c);
        o[e] = acc;
    }
    if (tid == 0) {
        o[g2] = stats[6];
        o[g2 + 1] = stats[7];
    }
}
