// Training-mode batch normalisation over (N, C, H, W) float32 for MindSpore's CPU backend,
// loaded as ``ops.Custom(..., func_type="aot")``.
//
// Why: MindSpore's CPU BatchNorm/BatchNormGrad run oneDNN's plain-layout implementation
// (ncsp_bnorm), which took about a third of an SSD300-MobileNetV2 training step. These loops
// make two passes over the data forward and two backward, one channel at a time.
//
// Aot calling convention: int f(int nparam, void** params, int* ndims, int64_t** shapes,
// const char** dtypes, void* stream, void* extra), inputs first, then the outputs.
#include <cmath>
#include <cstdint>

#include "common.h"

namespace {

struct Layout {
  int64_t n, c, hw;
};

Layout layout(const int64_t* shape) { return {shape[0], shape[1], shape[2] * shape[3]}; }

}  // namespace

// params: x (N,C,H,W), gamma (C), beta (C), eps (1) | y (N,C,H,W), mean (C), invstd (C).
// The variance is the biased one used to normalise; the caller derives the moving statistics.
extern "C" int BatchNormTrainForward(int nparam, void** params, int* ndims, int64_t** shapes,
                                     const char** dtypes, void*, void*) {
  if (nparam != 7 || ndims[0] != 4 || !ms_zoo::all_float32(dtypes, 0, 7)) return 1;
  const Layout g = layout(shapes[0]);
  const float* x = static_cast<const float*>(params[0]);
  const float* gamma = static_cast<const float*>(params[1]);
  const float* beta = static_cast<const float*>(params[2]);
  const float eps = *static_cast<const float*>(params[3]);
  float* y = static_cast<float*>(params[4]);
  float* mean_out = static_cast<float*>(params[5]);
  float* invstd_out = static_cast<float*>(params[6]);
  const double count = static_cast<double>(g.n * g.hw);
  ms_zoo::parallel_for(g.c, 3 * g.n * g.c * g.hw, [&](int64_t c) {
    // Sums around the channel's first value: no catastrophic cancellation when |mean| >> std.
    const float shift = x[c * g.hw];
    double sum = 0.0, sumsq = 0.0;
    for (int64_t b = 0; b < g.n; ++b) {
      const float* p = x + (b * g.c + c) * g.hw;
      float s = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s, s2)
      for (int64_t i = 0; i < g.hw; ++i) {
        const float d = p[i] - shift;
        s += d;
        s2 += d * d;
      }
      sum += s;
      sumsq += s2;
    }
    const double dmean = sum / count;
    const double var = sumsq / count - dmean * dmean;
    const float mean = static_cast<float>(shift + dmean);
    const float invstd = static_cast<float>(1.0 / std::sqrt((var > 0.0 ? var : 0.0) + eps));
    mean_out[c] = mean;
    invstd_out[c] = invstd;
    const float scale = gamma[c] * invstd;
    const float offset = beta[c] - mean * scale;
    for (int64_t b = 0; b < g.n; ++b) {
      const float* p = x + (b * g.c + c) * g.hw;
      float* q = y + (b * g.c + c) * g.hw;
#pragma omp simd
      for (int64_t i = 0; i < g.hw; ++i) q[i] = p[i] * scale + offset;
    }
  });
  return 0;
}

// params: dy, x, gamma, mean, invstd | dx, dgamma, dbeta.
extern "C" int BatchNormTrainBackward(int nparam, void** params, int* ndims, int64_t** shapes,
                                      const char** dtypes, void*, void*) {
  if (nparam != 8 || ndims[0] != 4 || !ms_zoo::all_float32(dtypes, 0, 8)) return 1;
  const Layout g = layout(shapes[0]);
  const float* dy = static_cast<const float*>(params[0]);
  const float* x = static_cast<const float*>(params[1]);
  const float* gamma = static_cast<const float*>(params[2]);
  const float* mean_in = static_cast<const float*>(params[3]);
  const float* invstd_in = static_cast<const float*>(params[4]);
  float* dx = static_cast<float*>(params[5]);
  float* dgamma = static_cast<float*>(params[6]);
  float* dbeta = static_cast<float*>(params[7]);
  const float count = static_cast<float>(g.n * g.hw);
  ms_zoo::parallel_for(g.c, 4 * g.n * g.c * g.hw, [&](int64_t c) {
    const float mean = mean_in[c], invstd = invstd_in[c];
    double sum_dy = 0.0, sum_dy_xc = 0.0;
    for (int64_t b = 0; b < g.n; ++b) {
      const float* pd = dy + (b * g.c + c) * g.hw;
      const float* px = x + (b * g.c + c) * g.hw;
      float s = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s, s2)
      for (int64_t i = 0; i < g.hw; ++i) {
        s += pd[i];
        s2 += pd[i] * (px[i] - mean);
      }
      sum_dy += s;
      sum_dy_xc += s2;
    }
    const float db = static_cast<float>(sum_dy);
    const float dg = static_cast<float>(sum_dy_xc) * invstd;
    dbeta[c] = db;
    dgamma[c] = dg;
    // dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat))
    const float k = gamma[c] * invstd;
    const float mean_dy = db / count;
    const float xhat_coef = dg * invstd / count;  // multiplies (x - mean)
    for (int64_t b = 0; b < g.n; ++b) {
      const float* pd = dy + (b * g.c + c) * g.hw;
      const float* px = x + (b * g.c + c) * g.hw;
      float* q = dx + (b * g.c + c) * g.hw;
#pragma omp simd
      for (int64_t i = 0; i < g.hw; ++i) q[i] = k * (pd[i] - mean_dy - (px[i] - mean) * xhat_coef);
    }
  });
  return 0;
}
