// Depthwise 2-D convolution (NCHW, float32, square odd kernel, zero padding as pad_mode 'same':
// ceil(h / stride) output rows, and when the padding a side needs is odd its extra pixel goes
// below / right of the input, as in MindSpore's and TensorFlow's 'same') for
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
  int64_t k, stride;
  int64_t pad_top, pad_left;  // zero rows above / columns left of the input ('same')
};

// Output columns [lo, hi) for which input column ow*stride - pad_left + j lies inside [0, w).
inline void valid_columns(const Geometry& g, int64_t j, int64_t* lo, int64_t* hi) {
  int64_t first = g.pad_left - j;  // smallest ow*stride that is valid
  *lo = first <= 0 ? 0 : (first + g.stride - 1) / g.stride;
  int64_t last = g.w - 1 + g.pad_left - j;  // largest valid ow*stride
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
        const int64_t iy = oy * S - g.pad_top + i;
        if (iy < 0 || iy >= g.h) continue;
        const float* xr = x + iy * g.w - g.pad_left + j;
        float* yr = y + oy * g.ow;
        for (int64_t ox = lo; ox < hi; ++ox) yr[ox] += wv * xr[ox * S];
      }
    }
  }
}

// Rows of a zero-padded 3x3 plane (forward_plane_3x3 below). At stride 2 each padded row is
// stored as its even columns, then from dst + evens its odd ones: output column ox then reads
// padded columns 2ox, 2ox+1, 2ox+2 as even[ox], odd[ox], even[ox+1], three contiguous runs
// (strided loads would not vectorise), the same loop as at stride 1 with other offsets. Padded
// column p holds x[p - 1], so the even padded columns hold x's odd ones and the other way round.
//
// With AVX2 the rows are written with intrinsics: the compiler's vectorised loops left a scalar
// tail per row, with a chain of nine dependent multiply-adds per pixel, which dominated on small
// planes (MobileNetV2's 10x10 and 19x19). SSD300's depthwise layers at batch 1, on their own in a
// C++ timing loop on two threads: 1.37 ms with the compiler's loops, 1.04 ms with these.
#if defined(__AVX2__) && defined(__FMA__)
// The vector loops read up to one vector past a padded row's last output.
constexpr int64_t kSlack = 16;

// bias_clamp on eight floats if Act, else v.
template <bool Act>
inline __m256 maybe_bias_clamp(__m256 v, __m256 bias, __m256 high) {
  return Act ? _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(v, bias), _mm256_setzero_ps()), high) : v;
}

// Input row src (w floats) into its padded row dst (w + 2 floats), with the input bias and
// clamp if InAct.
template <int S, bool InAct>
void copy_padded_row(const float* src, int64_t w, float* dst, float in_bias, float in_high) {
  const __m256 b = _mm256_set1_ps(in_bias), high = _mm256_set1_ps(in_high);
  const int64_t row = w + 2;
  if (S == 1) {
    dst[0] = 0.f;
    int64_t c = 0;
    for (; c + 8 <= w; c += 8)
      _mm256_storeu_ps(dst + 1 + c, maybe_bias_clamp<InAct>(_mm256_loadu_ps(src + c), b, high));
    if (c < w) {
      const __m256i lanes = ms_zoo::first_lanes(w - c);
      _mm256_maskstore_ps(dst + 1 + c, lanes, maybe_bias_clamp<InAct>(_mm256_maskload_ps(src + c, lanes), b, high));
    }
    dst[row - 1] = 0.f;
    return;
  }
  const int64_t evens = (row + 1) / 2;
  float* odd = dst + evens;
  int64_t m = 0;
  for (; 2 * m + 16 <= w; m += 8) {
    const __m256 lo = maybe_bias_clamp<InAct>(_mm256_loadu_ps(src + 2 * m), b, high);
    const __m256 hi = maybe_bias_clamp<InAct>(_mm256_loadu_ps(src + 2 * m + 8), b, high);
    // shuffle_ps picks within 128-bit halves; permute4x64 puts the four pairs back in order.
    auto ordered = [](__m256 v) { return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(v), 0xD8)); };
    _mm256_storeu_ps(odd + m, ordered(_mm256_shuffle_ps(lo, hi, 0x88)));      // x[2m], x[2m+2], ...
    _mm256_storeu_ps(dst + 1 + m, ordered(_mm256_shuffle_ps(lo, hi, 0xDD)));  // x[2m+1], x[2m+3], ...
  }
  auto in = [&](int64_t c) { return InAct ? ms_zoo::bias_clamp(src[c], in_bias, in_high) : src[c]; };
  const int64_t odd_columns = w / 2, even_columns = (w + 1) / 2;  // of x
  for (int64_t k = m; k < odd_columns; ++k) dst[k + 1] = in(2 * k + 1);
  for (int64_t k = m; k < even_columns; ++k) odd[k] = in(2 * k);
  dst[0] = 0.f;
  for (int64_t k = odd_columns + 1; k < evens; ++k) dst[k] = 0.f;
  for (int64_t k = even_columns; k < row - evens; ++k) odd[k] = 0.f;
}

// Output plane y (oh x ow) from the padded plane: output (oy, ox) reads padded columns ox, ox + c1
// and ox + c2 of padded rows oy*S, oy*S + 1, oy*S + 2. With Act, the bias and the clamp to
// [0, high] are applied before the store. One accumulator per kernel row keeps the chains of
// dependent multiply-adds short.
template <int S, bool Act>
void output_plane(const float* padded, int64_t row, int64_t c1, int64_t c2, const float* wk, float* y, int64_t oh,
                  int64_t ow, float bias, float high) {
  __m256 w[9];
  for (int i = 0; i < 9; ++i) w[i] = _mm256_set1_ps(wk[i]);
  const __m256 b = _mm256_set1_ps(bias), hi = _mm256_set1_ps(high);
  const __m256i last_lanes = ms_zoo::first_lanes(ow % 8);
  for (int64_t oy = 0; oy < oh; ++oy) {
    const float* r0 = padded + oy * S * row;
    const float* r1 = r0 + row;
    const float* r2 = r1 + row;
    float* yr = y + oy * ow;
    auto at = [&](int64_t ox) {
      __m256 a0 = _mm256_mul_ps(w[0], _mm256_loadu_ps(r0 + ox));
      __m256 a1 = _mm256_mul_ps(w[3], _mm256_loadu_ps(r1 + ox));
      __m256 a2 = _mm256_mul_ps(w[6], _mm256_loadu_ps(r2 + ox));
      a0 = _mm256_fmadd_ps(w[1], _mm256_loadu_ps(r0 + ox + c1), a0);
      a1 = _mm256_fmadd_ps(w[4], _mm256_loadu_ps(r1 + ox + c1), a1);
      a2 = _mm256_fmadd_ps(w[7], _mm256_loadu_ps(r2 + ox + c1), a2);
      a0 = _mm256_fmadd_ps(w[2], _mm256_loadu_ps(r0 + ox + c2), a0);
      a1 = _mm256_fmadd_ps(w[5], _mm256_loadu_ps(r1 + ox + c2), a1);
      a2 = _mm256_fmadd_ps(w[8], _mm256_loadu_ps(r2 + ox + c2), a2);
      return maybe_bias_clamp<Act>(_mm256_add_ps(_mm256_add_ps(a0, a1), a2), b, hi);
    };
    int64_t ox = 0;
    for (; ox + 8 <= ow; ox += 8) _mm256_storeu_ps(yr + ox, at(ox));
    // Masked: a full store would overlap the next row's first (measured slower) or, in the last
    // row, write into the next plane, another thread's.
    if (ox < ow) _mm256_maskstore_ps(yr + ox, last_lanes, at(ox));
  }
}
#else
constexpr int64_t kSlack = 0;

template <int S, bool InAct>
void copy_padded_row(const float* src, int64_t w, float* dst, float in_bias, float in_high) {
  auto in = [&](int64_t c) { return InAct ? ms_zoo::bias_clamp(src[c], in_bias, in_high) : src[c]; };
  const int64_t row = w + 2;
  if (S == 1) {
    dst[0] = dst[row - 1] = 0.f;
    for (int64_t c = 0; c < w; ++c) dst[c + 1] = in(c);
    return;
  }
  const int64_t evens = (row + 1) / 2;
  float* odd = dst + evens;
  const int64_t odd_columns = w / 2, even_columns = (w + 1) / 2;  // of x
  dst[0] = 0.f;
  for (int64_t k = 0; k < odd_columns; ++k) dst[k + 1] = in(2 * k + 1);
  for (int64_t k = odd_columns + 1; k < evens; ++k) dst[k] = 0.f;
  for (int64_t k = 0; k < even_columns; ++k) odd[k] = in(2 * k);
  for (int64_t k = even_columns; k < row - evens; ++k) odd[k] = 0.f;
}

template <int S, bool Act>
void output_plane(const float* padded, int64_t row, int64_t c1, int64_t c2, const float* wk, float* y, int64_t oh,
                  int64_t ow, float bias, float high) {
  for (int64_t oy = 0; oy < oh; ++oy) {
    const float* r0 = padded + oy * S * row;
    const float* r1 = r0 + row;
    const float* r2 = r1 + row;
    float* yr = y + oy * ow;
    for (int64_t ox = 0; ox < ow; ++ox) {
      float v = wk[0] * r0[ox] + wk[1] * r0[ox + c1] + wk[2] * r0[ox + c2] + wk[3] * r1[ox] + wk[4] * r1[ox + c1] +
                wk[5] * r1[ox + c2] + wk[6] * r2[ox] + wk[7] * r2[ox + c1] + wk[8] * r2[ox + c2];
      yr[ox] = Act ? ms_zoo::bias_clamp(v, bias, high) : v;
    }
  }
}
#endif

// forward_plane for 3x3 kernels (MobileNetV2's): the plane is first copied, zero-padded, into
// scratch memory, so that each output pixel is nine multiply-adds with no edge cases, summed in
// registers and stored once (forward_plane adds each tap to the whole output plane in turn).
// With Act, the bias and the clamp to [0, high] are applied before the store; with InAct,
// in_bias and the clamp to [0, in_high] are applied to the input as it is copied (the bias and
// activation of the 1x1 convolution before this one, which then need no pass of their own).
template <int S, bool Act, bool InAct>
void forward_plane_3x3(const Geometry& g, const float* x, const float* wk, float* y, float bias, float high,
                       float in_bias, float in_high) {
  const int64_t row = g.w + 2;  // floats per padded row
  float* padded = ms_zoo::scratch<0>((g.h + 2) * row + kSlack);
  std::memset(padded, 0, sizeof(float) * row);
  std::memset(padded + (g.h + 1) * row, 0, sizeof(float) * (row + kSlack));
  for (int64_t r = 0; r < g.h; ++r)
    copy_padded_row<S, InAct>(x + r * g.w, g.w, padded + (r + 1) * row, in_bias, in_high);
  // The plane holds one zero row and column on every side; 'same' at stride 2 on an even side
  // pads only after it (pad_top / pad_left 0), so reading starts one row / column later.
  const float* first = padded + (1 - g.pad_top) * row;
  int64_t c1 = 1, c2 = 2;  // where padded columns ox*S + 1 and ox*S + 2 start, relative to column ox*S
  if (S == 2) {
    const int64_t evens = (row + 1) / 2;  // stored first, then the odd columns
    if (g.pad_left == 1) {
      c1 = evens, c2 = 1;  // columns 2ox, 2ox+1, 2ox+2: even[ox], odd[ox], even[ox+1]
    } else {
      first += evens, c1 = 1 - evens, c2 = 1;  // 2ox+1, 2ox+2, 2ox+3: odd[ox], even[ox+1], odd[ox+1]
    }
  }
  output_plane<S, Act>(first, row, c1, c2, wk, y, g.oh, g.ow, bias, high);
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
        const int64_t iy = oy * S - g.pad_top + i;
        if (iy < 0 || iy >= g.h) continue;
        float* xr = dx + iy * g.w - g.pad_left + j;
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
          const int64_t iy = oy * S - g.pad_top + i;
          if (iy < 0 || iy >= g.h) continue;
          const float* xr = xp + iy * g.w - g.pad_left + j;
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
  g.stride = stride;
  g.oh = shapes[result][2];
  g.ow = shapes[result][3];
  // 'same': the smaller half of the padding a side needs goes before it.
  g.pad_top = std::max<int64_t>((g.oh - 1) * stride + g.k - g.h, 0) / 2;
  g.pad_left = std::max<int64_t>((g.ow - 1) * stride + g.k - g.w, 0) / 2;
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
