// Depthwise 2-D convolution (NCHW, float32, square kernel, symmetric zero padding k/2) for
// MindSpore's CPU backend, loaded as ``ops.Custom(..., func_type="aot")``.
//
// Why: MindSpore's CPU Conv2D hands a depthwise convolution to oneDNN on the plain NCHW
// layout, where oneDNN runs it as one tiny GEMM per channel (x64:gemm:jit) at ~2 GMAC/s.
// These loops run each (image, channel) plane on its own and let the compiler vectorise
// along the width, which is memory-bound and several times faster.
//
// Entry points follow the aot convention (MS_ZOO_AOT_ENTRY in common.h). The stride is part of the function name
// (MobileNetV2 uses 1 and 2); the kernel size comes from the weight's shape.
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <limits>

#include "common.h"

namespace {

struct Geometry {
  int64_t n, c, h, w;     // input
  int64_t oh, ow;         // output
  int64_t k, pad, stride;
};

// Output columns [lo, hi) for which input column ow*stride - pad + j lies inside [0, w).
inline void valid_columns(const Geometry& g, int64_t j, int64_t* lo, int64_t* hi) {
  int64_t first = g.pad - j;  // smallest ow*stride that is valid
  *lo = first <= 0 ? 0 : (first + g.stride - 1) / g.stride;
  int64_t last = g.w - 1 + g.pad - j;  // largest valid ow*stride
  *hi = last < 0 ? 0 : std::min(g.ow, last / g.stride + 1);
}

template <int S>
void forward_plane(const Geometry& g, const float* x, const float* wk, float* y) {
  std::memset(y, 0, sizeof(float) * g.oh * g.ow);
  for (int64_t i = 0; i < g.k; ++i) {
    for (int64_t j = 0; j < g.k; ++j) {
      const float wv = wk[i * g.k + j];
      int64_t lo, hi;
      valid_columns(g, j, &lo, &hi);
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        const int64_t iy = oy * S - g.pad + i;
        if (iy < 0 || iy >= g.h) continue;
        const float* xr = x + iy * g.w - g.pad + j;
        float* yr = y + oy * g.ow;
        for (int64_t ox = lo; ox < hi; ++ox) yr[ox] += wv * xr[ox * S];
      }
    }
  }
}

template <int S>
void backward_input_plane(const Geometry& g, const float* dy, const float* wk, float* dx) {
  std::memset(dx, 0, sizeof(float) * g.h * g.w);
  for (int64_t i = 0; i < g.k; ++i) {
    for (int64_t j = 0; j < g.k; ++j) {
      const float wv = wk[i * g.k + j];
      int64_t lo, hi;
      valid_columns(g, j, &lo, &hi);
      for (int64_t oy = 0; oy < g.oh; ++oy) {
        const int64_t iy = oy * S - g.pad + i;
        if (iy < 0 || iy >= g.h) continue;
        float* xr = dx + iy * g.w - g.pad + j;
        const float* dyr = dy + oy * g.ow;
        for (int64_t ox = lo; ox < hi; ++ox) xr[ox * S] += wv * dyr[ox];
      }
    }
  }
}

template <int S>
void backward_weight_channel(const Geometry& g, int64_t c, const float* x, const float* dy, float* dwk) {
  for (int64_t i = 0; i < g.k; ++i) {
    for (int64_t j = 0; j < g.k; ++j) {
      int64_t lo, hi;
      valid_columns(g, j, &lo, &hi);
      float acc = 0.f;
      for (int64_t b = 0; b < g.n; ++b) {
        const float* xp = x + (b * g.c + c) * g.h * g.w;
        const float* dyp = dy + (b * g.c + c) * g.oh * g.ow;
        for (int64_t oy = 0; oy < g.oh; ++oy) {
          const int64_t iy = oy * S - g.pad + i;
          if (iy < 0 || iy >= g.h) continue;
          const float* xr = xp + iy * g.w - g.pad + j;
          const float* dyr = dyp + oy * g.ow;
          float row = 0.f;
          // A float sum is only vectorised when the compiler may reorder it.
#pragma omp simd reduction(+ : row)
          for (int64_t ox = lo; ox < hi; ++ox) row += xr[ox * S] * dyr[ox];
          acc += row;
        }
      }
      dwk[i * g.k + j] = acc;
    }
  }
}

// image: (N, C, H, W); weight: (C, 1, K, K); result: (N, C, OH, OW).
Geometry geometry(int64_t** shapes, int image, int weight, int result, int64_t stride) {
  Geometry g;
  g.n = shapes[image][0];
  g.c = shapes[image][1];
  g.h = shapes[image][2];
  g.w = shapes[image][3];
  g.k = shapes[weight][2];
  g.pad = g.k / 2;
  g.stride = stride;
  g.oh = shapes[result][2];
  g.ow = shapes[result][3];
  return g;
}

bool shapes_ok(int nparam, int* ndims, const char** dtypes, int expected) {
  if (nparam != expected || !ms_zoo::all_float32(dtypes, 0, nparam)) return false;
  for (int i = 0; i < nparam; ++i)
    if (ndims[i] != 4) return false;
  return true;
}

// params: x, weight, y.
template <int S>
int forward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  if (!shapes_ok(nparam, ndims, dtypes, 3)) return 1;
  const Geometry g = geometry(shapes, 0, 1, 2, S);
  const float* x = static_cast<const float*>(params[0]);
  const float* w = static_cast<const float*>(params[1]);
  float* y = static_cast<float*>(params[2]);
  ms_zoo::parallel_for(g.n * g.c, g.n * g.c * g.oh * g.ow * g.k * g.k, [&](int64_t p) {
    forward_plane<S>(g, x + p * g.h * g.w, w + (p % g.c) * g.k * g.k, y + p * g.oh * g.ow);
  });
  return 0;
}

// Inference with the folded BatchNorm's bias and the activation after it applied to each plane
// while it is in cache (one pass over the output instead of three).
// params: x, weight, bias (C), y. Activation: 1 ReLU, 6 ReLU6.
template <int S, int Activation>
int forward_bias_act(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  if (nparam != 4 || !ms_zoo::all_float32(dtypes, 0, 4) || ndims[0] != 4 || ndims[1] != 4 || ndims[2] != 1 ||
      ndims[3] != 4)
    return 1;
  const Geometry g = geometry(shapes, 0, 1, 3, S);
  const float* x = static_cast<const float*>(params[0]);
  const float* w = static_cast<const float*>(params[1]);
  const float* bias = static_cast<const float*>(params[2]);
  float* y = static_cast<float*>(params[3]);
  constexpr float high = Activation == 6 ? 6.f : std::numeric_limits<float>::infinity();
  ms_zoo::parallel_for(g.n * g.c, g.n * g.c * g.oh * g.ow * g.k * g.k, [&](int64_t p) {
    float* yp = y + p * g.oh * g.ow;
    forward_plane<S>(g, x + p * g.h * g.w, w + (p % g.c) * g.k * g.k, yp);
    const float b = bias[p % g.c];
    for (int64_t i = 0; i < g.oh * g.ow; ++i) yp[i] = std::min(std::max(yp[i] + b, 0.f), high);
  });
  return 0;
}

// params: dy, weight, x (only its shape is read), dx.
template <int S>
int backward_input(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  if (!shapes_ok(nparam, ndims, dtypes, 4)) return 1;
  const Geometry g = geometry(shapes, 3, 1, 0, S);
  const float* dy = static_cast<const float*>(params[0]);
  const float* w = static_cast<const float*>(params[1]);
  float* dx = static_cast<float*>(params[3]);
  ms_zoo::parallel_for(g.n * g.c, g.n * g.c * g.oh * g.ow * g.k * g.k, [&](int64_t p) {
    backward_input_plane<S>(g, dy + p * g.oh * g.ow, w + (p % g.c) * g.k * g.k, dx + p * g.h * g.w);
  });
  return 0;
}

// params: dy, x, weight (only its shape is read), dw.
template <int S>
int backward_weight(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  if (!shapes_ok(nparam, ndims, dtypes, 4)) return 1;
  const Geometry g = geometry(shapes, 1, 3, 0, S);
  const float* dy = static_cast<const float*>(params[0]);
  const float* x = static_cast<const float*>(params[1]);
  float* dw = static_cast<float*>(params[3]);
  ms_zoo::parallel_for(g.c, g.n * g.c * g.oh * g.ow * g.k * g.k,
                       [&](int64_t c) { backward_weight_channel<S>(g, c, x, dy, dw + c * g.k * g.k); });
  return 0;
}

}  // namespace

MS_ZOO_AOT_ENTRY(DepthwiseForwardS1, forward<1>)
MS_ZOO_AOT_ENTRY(DepthwiseForwardS2, forward<2>)
MS_ZOO_AOT_ENTRY(DepthwiseBiasReluS1, (forward_bias_act<1, 1>))
MS_ZOO_AOT_ENTRY(DepthwiseBiasReluS2, (forward_bias_act<2, 1>))
MS_ZOO_AOT_ENTRY(DepthwiseBiasRelu6S1, (forward_bias_act<1, 6>))
MS_ZOO_AOT_ENTRY(DepthwiseBiasRelu6S2, (forward_bias_act<2, 6>))
MS_ZOO_AOT_ENTRY(DepthwiseBackwardInputS1, backward_input<1>)
MS_ZOO_AOT_ENTRY(DepthwiseBackwardInputS2, backward_input<2>)
MS_ZOO_AOT_ENTRY(DepthwiseBackwardWeightS1, backward_weight<1>)
MS_ZOO_AOT_ENTRY(DepthwiseBackwardWeightS2, backward_weight<2>)
