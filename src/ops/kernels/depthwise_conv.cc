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

// forward_plane for 3x3 kernels (MobileNetV2's), 1.2-2.5x faster: the plane is first copied,
// zero-padded, into scratch memory, so that each output pixel is nine multiply-adds with no edge
// cases, summed in registers and stored once (forward_plane adds each tap to the whole output
// plane in turn). The compiler vectorises the row loop. With Act, the bias and the clamp to
// [0, high] are applied before the store; with InAct, in_bias and the clamp to [0, in_high] are
// applied to the input as it is copied (the bias and activation of the 1x1 convolution before
// this one, which then need no pass of their own).
template <int S, bool Act, bool InAct>
void forward_plane_3x3(const Geometry& g, const float* x, const float* wk, float* y, float bias, float high,
                       float in_bias, float in_high) {
  const int64_t row = g.w + 2;  // floats per padded row
  float* padded = ms_zoo::scratch<0>((g.h + 2) * row);
  std::memset(padded, 0, sizeof(float) * row);
  std::memset(padded + (g.h + 1) * row, 0, sizeof(float) * row);
  // At stride 2 each padded row is stored as its even columns, then its odd ones: output
  // column ox then reads columns 2ox, 2ox+1, 2ox+2 as even[ox], odd[ox], even[ox+1], three
  // contiguous runs the compiler vectorises (strided loads would not be), the same loop as at
  // stride 1 with other offsets.
  const int64_t evens = (row + 1) / 2;
  for (int64_t r = 0; r < g.h; ++r) {
    float* dst = padded + (r + 1) * row;
    const float* src = x + r * g.w;
    auto in = [&](int64_t c) { return InAct ? ms_zoo::bias_clamp(src[c], in_bias, in_high) : src[c]; };
    if (S == 2) {
      float* odd = dst + evens;
      const int64_t odd_columns = g.w / 2, even_columns = (g.w + 1) / 2;  // of the unpadded row
      dst[0] = 0.f;
      for (int64_t m = 0; m < odd_columns; ++m) dst[m + 1] = in(2 * m + 1);
      for (int64_t m = odd_columns + 1; m < evens; ++m) dst[m] = 0.f;
      for (int64_t m = 0; m < even_columns; ++m) odd[m] = in(2 * m);
      for (int64_t m = even_columns; m < row - evens; ++m) odd[m] = 0.f;
    } else {
      dst[0] = dst[g.w + 1] = 0.f;
      for (int64_t c = 0; c < g.w; ++c) dst[c + 1] = in(c);
    }
  }
  const float w0 = wk[0], w1 = wk[1], w2 = wk[2], w3 = wk[3], w4 = wk[4], w5 = wk[5], w6 = wk[6], w7 = wk[7],
              w8 = wk[8];
  // Where padded columns ox*S + 1 and ox*S + 2 start, relative to column ox*S.
  const int64_t c1 = S == 2 ? evens : 1, c2 = S == 2 ? 1 : 2;
  for (int64_t oy = 0; oy < g.oh; ++oy) {
    const float* r0 = padded + oy * S * row;
    const float* r1 = r0 + row;
    const float* r2 = r1 + row;
    float* yr = y + oy * g.ow;
    for (int64_t ox = 0; ox < g.ow; ++ox) {
      float v = w0 * r0[ox] + w1 * r0[ox + c1] + w2 * r0[ox + c2] + w3 * r1[ox] + w4 * r1[ox + c1] +
                w5 * r1[ox + c2] + w6 * r2[ox] + w7 * r2[ox + c1] + w8 * r2[ox + c2];
      if (Act) v = ms_zoo::bias_clamp(v, bias, high);
      yr[ox] = v;
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

// Forward, optionally with the epilogue and prologue of inference after BatchNorm folding.
// Activation (0: none, 1: ReLU, 6: ReLU6) != 0: the folded BatchNorm's bias and the activation
// after it are applied to each plane while it is in cache (one pass over the output instead of
// three). InActivation != 0 (3x3 kernels only): x is the output of the 1x1 convolution before
// this one without its bias and activation, which are applied as the plane is read.
// params: x (N, C, H, W), weight (C, 1, K, K), [in_bias (C) if InActivation], [bias (C) if
// Activation], y.
template <int S, int InActivation, int Activation>
int forward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  constexpr int biases = (InActivation != 0) + (Activation != 0);
  if (nparam != 3 + biases || !ms_zoo::all_float32(dtypes, 0, nparam)) return 1;
  for (int i = 0; i < nparam; ++i)
    if (ndims[i] != (i >= 2 && i < 2 + biases ? 1 : 4)) return 1;
  const Geometry g = geometry(shapes, 0, 1, nparam - 1, S);
  if (InActivation && g.k != 3) return 1;
  const float* x = static_cast<const float*>(params[0]);
  const float* w = static_cast<const float*>(params[1]);
  const float* in_bias = InActivation ? static_cast<const float*>(params[2]) : nullptr;
  const float* bias = Activation ? static_cast<const float*>(params[nparam - 2]) : nullptr;
  float* y = static_cast<float*>(params[nparam - 1]);
  constexpr float high = ms_zoo::clamp_high(Activation), in_high = ms_zoo::clamp_high(InActivation);
  ms_zoo::parallel_for(g.n * g.c, g.n * g.c * g.oh * g.ow * g.k * g.k, [&](int64_t p) {
    const int64_t c = p % g.c;
    float* yp = y + p * g.oh * g.ow;
    const float b = Activation ? bias[c] : 0.f;
    if (g.k == 3) {
      forward_plane_3x3<S, Activation != 0, InActivation != 0>(g, x + p * g.h * g.w, w + c * 9, yp, b, high,
                                                               InActivation ? in_bias[c] : 0.f, in_high);
      return;
    }
    forward_plane<S>(g, x + p * g.h * g.w, w + c * g.k * g.k, yp);
    if (Activation)
      for (int64_t i = 0; i < g.oh * g.ow; ++i) yp[i] = ms_zoo::bias_clamp(yp[i], b, high);
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

MS_ZOO_AOT_ENTRY(DepthwiseForwardS1, (forward<1, 0, 0>))
MS_ZOO_AOT_ENTRY(DepthwiseForwardS2, (forward<2, 0, 0>))
MS_ZOO_AOT_ENTRY(DepthwiseBiasReluS1, (forward<1, 0, 1>))
MS_ZOO_AOT_ENTRY(DepthwiseBiasReluS2, (forward<2, 0, 1>))
MS_ZOO_AOT_ENTRY(DepthwiseBiasRelu6S1, (forward<1, 0, 6>))
MS_ZOO_AOT_ENTRY(DepthwiseBiasRelu6S2, (forward<2, 0, 6>))
MS_ZOO_AOT_ENTRY(DepthwiseInReluBiasReluS1, (forward<1, 1, 1>))
MS_ZOO_AOT_ENTRY(DepthwiseInReluBiasReluS2, (forward<2, 1, 1>))
MS_ZOO_AOT_ENTRY(DepthwiseInReluBiasRelu6S1, (forward<1, 1, 6>))
MS_ZOO_AOT_ENTRY(DepthwiseInReluBiasRelu6S2, (forward<2, 1, 6>))
MS_ZOO_AOT_ENTRY(DepthwiseInRelu6BiasReluS1, (forward<1, 6, 1>))
MS_ZOO_AOT_ENTRY(DepthwiseInRelu6BiasReluS2, (forward<2, 6, 1>))
MS_ZOO_AOT_ENTRY(DepthwiseInRelu6BiasRelu6S1, (forward<1, 6, 6>))
MS_ZOO_AOT_ENTRY(DepthwiseInRelu6BiasRelu6S2, (forward<2, 6, 6>))
MS_ZOO_AOT_ENTRY(DepthwiseBackwardInputS1, backward_input<1>)
MS_ZOO_AOT_ENTRY(DepthwiseBackwardInputS2, backward_input<2>)
MS_ZOO_AOT_ENTRY(DepthwiseBackwardWeightS1, backward_weight<1>)
MS_ZOO_AOT_ENTRY(DepthwiseBackwardWeightS2, backward_weight<2>)
