// Training-mode batch normalisation over (N, C, H, W) float32 for MindSpore's CPU backend,
// with an optional clamp activation (ReLU, ReLU6) and the moving-statistics update fused in,
// loaded as ``ops.Custom(..., func_type="aot")``.
//
// Why: MindSpore's CPU BatchNorm/BatchNormGrad run oneDNN's plain-layout implementation
// (ncsp_bnorm), which took about a third of an SSD300-MobileNetV2 training step. These loops
// make two passes over the data forward and two backward, one channel at a time. Fusing the
// activation saves its own pass and its gradient's; fusing the moving statistics saves nine
// tiny MindSpore ops per layer, which at batch 2 cost more in launches than in arithmetic.
#include <cmath>
#include <cstdint>

#include "common.h"

namespace {

struct Layout {
  int64_t n, c, hw;
};

Layout layout(const int64_t* shape) { return {shape[0], shape[1], shape[2] * shape[3]}; }

// hyper = [eps, momentum (weight of the new batch), clamp low, clamp high]; no activation is
// the clamp (-inf, inf), ReLU (0, inf), ReLU6 (0, 6).
struct Hyper {
  float eps, momentum, low, high;
};

Hyper hyper(const void* p) {
  const float* h = static_cast<const float*>(p);
  return {h[0], h[1], h[2], h[3]};
}

// params: x (N,C,H,W), gamma (C), beta (C), moving_mean (C), moving_var (C), hyper (4)
//       | y (N,C,H,W), mean (C), invstd (C), new moving_mean (C), new moving_var (C).
// The biased variance normalises; the unbiased one updates the moving variance (as MindSpore's
// BatchNorm does).
int batch_norm_forward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  if (nparam != 11 || ndims[0] != 4 || !ms_zoo::all_float32(dtypes, 0, 11)) return 1;
  const Layout g = layout(shapes[0]);
  const float* x = static_cast<const float*>(params[0]);
  const float* gamma = static_cast<const float*>(params[1]);
  const float* beta = static_cast<const float*>(params[2]);
  const float* moving_mean = static_cast<const float*>(params[3]);
  const float* moving_var = static_cast<const float*>(params[4]);
  const Hyper h = hyper(params[5]);
  float* y = static_cast<float*>(params[6]);
  float* mean_out = static_cast<float*>(params[7]);
  float* invstd_out = static_cast<float*>(params[8]);
  float* moving_mean_out = static_cast<float*>(params[9]);
  float* moving_var_out = static_cast<float*>(params[10]);
  const double count = static_cast<double>(g.n * g.hw);
  const double unbias = count > 1.0 ? count / (count - 1.0) : 1.0;
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
    const double var = std::max(sumsq / count - dmean * dmean, 0.0);
    const float mean = static_cast<float>(shift + dmean);
    const float invstd = static_cast<float>(1.0 / std::sqrt(var + h.eps));
    mean_out[c] = mean;
    invstd_out[c] = invstd;
    moving_mean_out[c] = moving_mean[c] + (mean - moving_mean[c]) * h.momentum;
    moving_var_out[c] = moving_var[c] + (static_cast<float>(var * unbias) - moving_var[c]) * h.momentum;
    const float scale = gamma[c] * invstd;
    const float offset = beta[c] - mean * scale;
    const float low = h.low, high = h.high;
    for (int64_t b = 0; b < g.n; ++b) {
      const float* p = x + (b * g.c + c) * g.hw;
      float* q = y + (b * g.c + c) * g.hw;
#pragma omp simd
      for (int64_t i = 0; i < g.hw; ++i) q[i] = std::min(std::max(p[i] * scale + offset, low), high);
    }
  });
  return 0;
}

// params: dy, x, gamma, beta, mean, invstd, hyper | dx, dgamma, dbeta.
// The activation's gradient (dy where low < pre-activation < high, else 0) is applied on the
// fly; the pre-activation is recomputed from x, which is cheaper than storing it.
int batch_norm_backward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  if (nparam != 10 || ndims[0] != 4 || !ms_zoo::all_float32(dtypes, 0, 10)) return 1;
  const Layout g = layout(shapes[0]);
  const float* dy = static_cast<const float*>(params[0]);
  const float* x = static_cast<const float*>(params[1]);
  const float* gamma = static_cast<const float*>(params[2]);
  const float* beta = static_cast<const float*>(params[3]);
  const float* mean_in = static_cast<const float*>(params[4]);
  const float* invstd_in = static_cast<const float*>(params[5]);
  const Hyper h = hyper(params[6]);
  float* dx = static_cast<float*>(params[7]);
  float* dgamma = static_cast<float*>(params[8]);
  float* dbeta = static_cast<float*>(params[9]);
  const float count = static_cast<float>(g.n * g.hw);
  ms_zoo::parallel_for(g.c, 4 * g.n * g.c * g.hw, [&](int64_t c) {
    const float mean = mean_in[c], invstd = invstd_in[c];
    const float scale = gamma[c] * invstd;
    const float offset = beta[c] - mean * scale;
    const float low = h.low, high = h.high;
    double sum_dz = 0.0, sum_dz_xc = 0.0;
    for (int64_t b = 0; b < g.n; ++b) {
      const float* pd = dy + (b * g.c + c) * g.hw;
      const float* px = x + (b * g.c + c) * g.hw;
      float s = 0.f, s2 = 0.f;
#pragma omp simd reduction(+ : s, s2)
      for (int64_t i = 0; i < g.hw; ++i) {
        const float z = px[i] * scale + offset;
        const float dz = (z > low && z < high) ? pd[i] : 0.f;
        s += dz;
        s2 += dz * (px[i] - mean);
      }
      sum_dz += s;
      sum_dz_xc += s2;
    }
    const float db = static_cast<float>(sum_dz);
    const float dg = static_cast<float>(sum_dz_xc) * invstd;
    dbeta[c] = db;
    dgamma[c] = dg;
    // dx = gamma * invstd * (dz - mean(dz) - xhat * mean(dz * xhat))
    const float mean_dz = db / count;
    const float xhat_coef = dg * invstd / count;  // multiplies (x - mean)
    for (int64_t b = 0; b < g.n; ++b) {
      const float* pd = dy + (b * g.c + c) * g.hw;
      const float* px = x + (b * g.c + c) * g.hw;
      float* q = dx + (b * g.c + c) * g.hw;
#pragma omp simd
      for (int64_t i = 0; i < g.hw; ++i) {
        const float z = px[i] * scale + offset;
        const float dz = (z > low && z < high) ? pd[i] : 0.f;
        q[i] = scale * (dz - mean_dz - (px[i] - mean) * xhat_coef);
      }
    }
  });
  return 0;
}

}  // namespace

MS_ZOO_AOT_ENTRY(BatchNormTrainForward, batch_norm_forward)
MS_ZOO_AOT_ENTRY(BatchNormTrainBackward, batch_norm_backward)
