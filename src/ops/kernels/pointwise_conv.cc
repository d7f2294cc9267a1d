// 1x1 convolution (stride 1, no padding, ungrouped; NCHW, float32) for inference on MindSpore's
// CPU backend, loaded as ``ops.Custom(..., func_type="aot")``.
//
// Why: a 1x1 convolution is the matrix product y (M x P) = W (M x K) x (K x P) per image, with
// P = H * W. MindSpore's CPU Conv2D hands it to oneDNN, which ran SSD300's 1x1 layers at batch 1
// at 55-105 GMAC/s (MindSpore's profiler; 8.4 ms of ~12.4 ms of operator time), followed by a
// BiasAdd op per layer. Here each 6 x 16 block of y stays in twelve AVX registers for the whole
// K loop, on weights packed once (`ActivatedConv2d.fuse_for_inference`), and the bias and
// activation are applied before the block is stored.
//
// Entry points (aot convention, MS_ZOO_AOT_ENTRY in common.h), all x (N, K, H, W), packed
// weights (ceil(M / 6), K, 6) (rows m = 6 i + r of W at [i][k][r], zero rows past M), bias (M)
// -> y (N, M, H, W):
//   PointwiseConvBias{,Relu,Relu6}  with the bias and activation
//   PointwiseConv                   without (they moved to the next layer); the bias only gives M
// (MindSpore infers y's shape from the inputs' shapes).
// Without AVX2 and FMA the entry points return an error; the Python side does not use them then
// (`aot.vector_kernels()`), and oneDNN's convolution stays.
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "common.h"

#if defined(__AVX2__) && defined(__FMA__)
namespace {

constexpr int64_t kPanelRows = 6;  // rows of W (output channels) per register block
constexpr int64_t kColumns = 16;   // columns of x (pixels) per register block: two vectors

struct Block {
  __m256 c[kPanelRows][2];
};

// The 6 x 16 block W[panel rows] x[:, columns] over all K, with x's rows ldx floats apart.
inline Block multiply(const float* w, const float* x, int64_t K, int64_t ldx) {
  // Loops unrolled, so that every accumulator is indexed by constants and stays in a register
  // (accumulating into the returned Block kept them in memory).
  __m256 c[kPanelRows][2];
#pragma GCC unroll 6
  for (int r = 0; r < kPanelRows; ++r) c[r][0] = c[r][1] = _mm256_setzero_ps();
  for (int64_t k = 0; k < K; ++k, x += ldx, w += kPanelRows) {
    const __m256 b0 = _mm256_loadu_ps(x), b1 = _mm256_loadu_ps(x + 8);
#pragma GCC unroll 6
    for (int r = 0; r < kPanelRows; ++r) {
      const __m256 a = _mm256_broadcast_ss(w + r);
      c[r][0] = _mm256_fmadd_ps(a, b0, c[r][0]);
      c[r][1] = _mm256_fmadd_ps(a, b1, c[r][1]);
    }
  }
  Block block;
#pragma GCC unroll 6
  for (int r = 0; r < kPanelRows; ++r) {
    block.c[r][0] = c[r][0];
    block.c[r][1] = c[r][1];
  }
  return block;
}

// One image: y (M x P) = activation(W x + bias), bias == nullptr for none. Activation: 0 none,
// 1 ReLU, 6 ReLU6.
template <int Activation>
void convolve_image(const float* x, int64_t K, int64_t P, const float* packed, int64_t M, const float* bias,
                    float* y, int64_t column_block, int64_t first_panel, int64_t last_panel) {
  const int64_t column = column_block * kColumns, columns = std::min(kColumns, P - column);
  // Whole blocks read x in place, its K rows P floats apart (packing them first was slower,
  // 4.9-5.0 ms against 4.7-4.8 ms for SSD300's layers); a partial block is copied, zero-padded.
  const float* xb = x + column;
  int64_t ldx = P;
  if (columns < kColumns) {
    float* padded = ms_zoo::scratch<0>(K * kColumns);
    for (int64_t k = 0; k < K; ++k) {
      std::memcpy(padded + k * kColumns, x + k * P + column, columns * sizeof(float));
      std::memset(padded + k * kColumns + columns, 0, (kColumns - columns) * sizeof(float));
    }
    xb = padded;
    ldx = kColumns;
  }
  const __m256i low_lanes = ms_zoo::first_lanes(columns), high_lanes = ms_zoo::first_lanes(columns - 8);
  const __m256 zero = _mm256_setzero_ps(), high = _mm256_set1_ps(ms_zoo::clamp_high(Activation));
  for (int64_t panel = first_panel; panel < last_panel; ++panel) {
    const Block block = multiply(packed + panel * K * kPanelRows, xb, K, ldx);
    const int64_t rows = std::min(kPanelRows, M - panel * kPanelRows);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t m = panel * kPanelRows + r;
      __m256 v0 = block.c[r][0], v1 = block.c[r][1];
      if (bias != nullptr) {
        const __m256 b = _mm256_set1_ps(bias[m]);
        v0 = _mm256_add_ps(v0, b);
        v1 = _mm256_add_ps(v1, b);
      }
      if (Activation != 0) {
        v0 = _mm256_min_ps(_mm256_max_ps(v0, zero), high);
        v1 = _mm256_min_ps(_mm256_max_ps(v1, zero), high);
      }
      float* yr = y + m * P + column;
      if (columns == kColumns) {
        _mm256_storeu_ps(yr, v0);
        _mm256_storeu_ps(yr + 8, v1);
      } else {
        _mm256_maskstore_ps(yr, low_lanes, v0);
        _mm256_maskstore_ps(yr + 8, high_lanes, v1);
      }
    }
  }
}

// params: x, packed, bias, y.
template <bool AddBias, int Activation>
int pointwise_conv(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  if (nparam != 4 || !ms_zoo::all_float32(dtypes, 0, nparam) || ndims[0] != 4 || ndims[1] != 3 || ndims[2] != 1 ||
      ndims[3] != 4)
    return 1;
  const int64_t* xs = shapes[0];
  const int64_t* ys = shapes[3];
  const int64_t N = xs[0], K = xs[1], P = xs[2] * xs[3], M = ys[1];
  const int64_t panels = (M + kPanelRows - 1) / kPanelRows;
  if (ys[0] != N || ys[2] != xs[2] || ys[3] != xs[3] || shapes[1][0] != panels || shapes[1][1] != K ||
      shapes[1][2] != kPanelRows || shapes[2][0] != M)
    return 1;
  const float* x = static_cast<const float*>(params[0]);
  const float* packed = static_cast<const float*>(params[1]);
  const float* bias = AddBias ? static_cast<const float*>(params[2]) : nullptr;
  float* y = static_cast<float*>(params[3]);
  // Tasks: (image, column block, run of weight panels). Small images have few column blocks
  // (a 10x10 map has 7), so the panels are split into runs to give both threads work.
  const int64_t column_blocks = (P + kColumns - 1) / kColumns;
  const int64_t runs = std::min(panels, std::max<int64_t>(1, (16 + N * column_blocks - 1) / (N * column_blocks)));
  const int64_t per_run = (panels + runs - 1) / runs;
  ms_zoo::parallel_for(N * column_blocks * runs, N * M * P * K, [=](int64_t task) {
    const int64_t run = task % runs, column_block = task / runs % column_blocks, n = task / runs / column_blocks;
    convolve_image<Activation>(x + n * K * P, K, P, packed, M, bias, y + n * M * P, column_block, run * per_run,
                               std::min(panels, (run + 1) * per_run));
  });
  return 0;
}

}  // namespace

MS_ZOO_AOT_ENTRY(PointwiseConv, (pointwise_conv<false, 0>))
MS_ZOO_AOT_ENTRY(PointwiseConvBias, (pointwise_conv<true, 0>))
MS_ZOO_AOT_ENTRY(PointwiseConvBiasRelu, (pointwise_conv<true, 1>))
MS_ZOO_AOT_ENTRY(PointwiseConvBiasRelu6, (pointwise_conv<true, 6>))
#else
namespace {
int unavailable(int, void**, int*, int64_t**, const char**) { return 1; }
}  // namespace
MS_ZOO_AOT_ENTRY(PointwiseConv, unavailable)
MS_ZOO_AOT_ENTRY(PointwiseConvBias, unavailable)
MS_ZOO_AOT_ENTRY(PointwiseConvBiasRelu, unavailable)
MS_ZOO_AOT_ENTRY(PointwiseConvBiasRelu6, unavailable)
#endif
