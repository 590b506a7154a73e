// The LeGrad map's products without materialising them (issue 13). For one mask m and head h,
// G = U_h V_hᵀ is N×N (U_h: the mask's ∂s/∂O for that head, [N, Dh]; V_h: the values, [N, Dh]). The map
// needs only the column sums of ReLU(G) over rows and heads, and its backward only the sign of G, so both
// kernels compute G tile by tile in registers (a 64×64 tile per block, 4×4 per thread, k in chunks of 32
// through shared memory) and keep M·H·N² values out of device memory. Generic twin: Relevance's dense path.
//
// Layouts (contiguous f32): u [M, N, H·Dh] (heads interleaved as in the attention output), v [H, N, Dh],
// colsum / w [M, N], du [M, N, H·Dh].

#define TILE 64
#define KC 32
#define THREADS 256

// us[k][i] = U[i0 + i, h, k0 + k] and vs[k][j] = V[h, j0 + j, k0 + k], zero outside the matrices.
__device__ __forceinline__ void load_chunk(float (*us)[TILE + 1], float (*vs)[TILE + 1], const float* ub,
                                           const float* vb, int i0, int j0, int k0, int n, int c, int dh) {
    for (int e = threadIdx.x; e < TILE * KC; e += THREADS) {
        int r = e / KC, kk = e % KC, k = k0 + kk;
        int i = i0 + r, j = j0 + r;
        us[kk][r] = (i < n && k < dh) ? ub[(size_t)i * c + k] : 0.f;
        vs[kk][r] = (j < n && k < dh) ? vb[(size_t)j * dh + k] : 0.f;
    }
}

// acc[r][s] = G[i0 + 4·ty + r, j0 + 4·tx + s] for the block's 64×64 tile.
__device__ __forceinline__ void tile_product(float acc[4][4], float (*us)[TILE + 1], float (*vs)[TILE + 1],
                                             const float* ub, const float* vb, int i0, int j0, int n, int c,
                                             int dh) {
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
#pragma unroll
    for (int r = 0; r < 4; ++r)
#pragma unroll
        for (int s = 0; s < 4; ++s) acc[r][s] = 0.f;
    for (int k0 = 0; k0 < dh; k0 += KC) {
        load_chunk(us, vs, ub, vb, i0, j0, k0, n, c, dh);
        __syncthreads();
#pragma unroll 8
        for (int kk = 0; kk < KC; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int r = 0; r < 4; ++r) a[r] = us[kk][ty * 4 + r];
#pragma unroll
            for (int s = 0; s < 4; ++s) b[s] = vs[kk][tx * 4 + s];
#pragma unroll
            for (int r = 0; r < 4; ++r)
#pragma unroll
                for (int s = 0; s < 4; ++s) acc[r][s] = fmaf(a[r], b[s], acc[r][s]);
        }
        __syncthreads();
    }
}

// colsum[m, j] += Σ_{i in the block's rows} ReLU(G[m, h, i, j]); grid (M·H, row tiles, col tiles): M·H in x,
// whose limit is 2^31 − 1, not y's or z's 65535. colsum must be zeroed: row tiles and heads meet by atomicAdd.
extern "C" __global__ void legrad_relu_colsum(const float* __restrict__ u, const float* __restrict__ v,
                                              float* __restrict__ colsum, int n, int heads, int dh) {
    __shared__ float us[KC][TILE + 1];
    __shared__ float vs[KC][TILE + 1];
    __shared__ float partial[16][TILE];
    const int i0 = blockIdx.y * TILE, j0 = blockIdx.z * TILE;
    const int m = blockIdx.x / heads, h = blockIdx.x % heads;
    const int c = heads * dh;
    const float* ub = u + (size_t)m * n * c + (size_t)h * dh;
    const float* vb = v + (size_t)h * n * dh;
    float acc[4][4];
    tile_product(acc, us, vs, ub, vb, i0, j0, n, c, dh);
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    // Rows past N have U = 0, so G = 0 there and ReLU adds nothing.
#pragma unroll
    for (int s = 0; s < 4; ++s) {
        float sum = 0.f;
#pragma unroll
        for (int r = 0; r < 4; ++r) sum += fmaxf(acc[r][s], 0.f);
        partial[ty][tx * 4 + s] = sum;
    }
    __syncthreads();
    if (threadIdx.x < TILE) {
        float sum = 0.f;
#pragma unroll
        for (int t = 0; t < 16; ++t) sum += partial[t][threadIdx.x];
        const int j = j0 + threadIdx.x;
        if (j < n) atomicAdd(&colsum[(size_t)m * n + j], sum);
    }
}

// du[m, i, h·Dh + k] = Σ_j [G[m, h, i, j] > 0] · w[m, j] · V[h, j, k]; grid (M·H, row tiles). Each block owns
// its rows of its head's columns of du, so it accumulates there without atomics; du must be zeroed.
extern "C" __global__ void legrad_relu_colsum_backward(const float* __restrict__ u, const float* __restrict__ v,
                                                       const float* __restrict__ w, float* __restrict__ du, int n,
                                                       int heads, int dh) {
    __shared__ float us[KC][TILE + 1];
    __shared__ float vs[KC][TILE + 1];
    __shared__ float gate[TILE][TILE + 1];  // [G > 0]·w for the current 64×64 tile
    const int i0 = blockIdx.y * TILE;
    const int m = blockIdx.x / heads, h = blockIdx.x % heads;
    const int c = heads * dh;
    const float* ub = u + (size_t)m * n * c + (size_t)h * dh;
    const float* vb = v + (size_t)h * n * dh;
    const float* wm = w + (size_t)m * n;
    float* dub = du + (size_t)m * n * c + (size_t)h * dh;
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    const int lane = threadIdx.x % KC, group = threadIdx.x / KC;  // second product: 8 rows × 1 column each
    for (int j0 = 0; j0 < n; j0 += TILE) {
        float acc[4][4];
        tile_product(acc, us, vs, ub, vb, i0, j0, n, c, dh);
#pragma unroll
        for (int s = 0; s < 4; ++s) {
            const int j = j0 + tx * 4 + s;
            const float wj = j < n ? wm[j] : 0.f;
#pragma unroll
            for (int r = 0; r < 4; ++r) gate[ty * 4 + r][tx * 4 + s] = acc[r][s] > 0.f ? wj : 0.f;
        }
        __syncthreads();
        for (int k0 = 0; k0 < dh; k0 += KC) {
            // vs[k][j] = V[h, j0 + j, k0 + k]
            for (int e = threadIdx.x; e < TILE * KC; e += THREADS) {
                const int r = e / KC, kk = e % KC, j = j0 + r, k = k0 + kk;
                vs[kk][r] = (j < n && k < dh) ? vb[(size_t)j * dh + k] : 0.f;
            }
            __syncthreads();
            float out[8];
#pragma unroll
            for (int r = 0; r < 8; ++r) out[r] = 0.f;
            for (int j = 0; j < TILE; ++j) {
                const float vj = vs[lane][j];
#pragma unroll
                for (int r = 0; r < 8; ++r) out[r] = fmaf(gate[group * 8 + r][j], vj, out[r]);
            }
            const int k = k0 + lane;
#pragma unroll
            for (int r = 0; r < 8; ++r) {
                const int i = i0 + group * 8 + r;
                if (i < n && k < dh) dub[(size_t)i * c + k] += out[r];
            }
            __syncthreads();
        }
    }
}
