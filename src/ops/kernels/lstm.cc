// The recurrent part of a (bidirectional) LSTM layer over float32, for MindSpore's CPU backend,
// loaded as ``ops.Custom(..., func_type="aot")``.
//
// Why: MindSpore's CPU LSTM and LSTMGrad were three quarters of CRNN's inference time at
// batch 1 and a quarter of its training step. The input projection x W_ih^T + b of every time
// step is one large matrix product that MindSpore does well, so the caller does it; what is
// left here is the sequential part: per step one small product h_{t-1} W_hh^T and the gates.
// Directions and groups of batch rows are independent, so they run on separate threads for
// the whole sequence, with no synchronisation between steps.
//
// Layouts (D directions, 1 or 2, each with its own inputs; gates in PyTorch's order i, f, g, o):
//   gates_in (T, B, 4H)    a direction's input projections, biases included
//   w        (4H, H)       its W_hh
//   h        (T, B, D*H)   outputs, the forward direction first (what nn.LSTM returns)
//   c        (T, B, D*H)   cell states;  act (T, B, D*4H) the activated gates (for backward)
// The reverse direction runs from t = T-1 down to 0. Initial states are zero.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "common.h"

namespace {

struct Shape {
  int64_t t, b, d, h;  // time steps, batch, directions, hidden size
};

// The gate arithmetic is written once, for V = float (scalar tails) and V = f8, eight floats in
// GCC's vector extension (AVX registers where the CPU has them; compilers' auto-vectoriser gave
// up on these loops because of the range clamp in exp).
using f8 = float __attribute__((vector_size(32)));
using i8 = int32_t __attribute__((vector_size(32)));

template <class V>
inline V load(const float* p) {
  V v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

template <class V>
inline void store(float* p, V v) {
  std::memcpy(p, &v, sizeof v);
}

inline float exp_(float x) { return std::exp(x); }

// exp(x) to a few ulp: x = n ln2 + r, a degree-6 polynomial (Cephes' expf) for e^r, 2^n put
// into the exponent bits.
inline f8 exp_(f8 x) {
  const f8 low = f8{} - 87.0f, high = f8{} + 88.0f;
  x = x < low ? low : x;
  x = x > high ? high : x;
  // Adding and subtracting 1.5 * 2^23 rounds to the nearest integer (no -ffast-math here).
  const f8 n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const f8 r = (x - n * 0.693359375f) + n * 2.12194440e-4f;  // x - n ln2 in two parts
  f8 p = f8{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  return (f8)((i8)p + (__builtin_convertvector(n, i8) << 23));
}

template <class V>
inline V sigmoid(V x) {
  return 1.0f / (1.0f + exp_(-x));
}

template <class V>
inline V tanh_(V x) {
  return 2.0f / (1.0f + exp_(-2.0f * x)) - 1.0f;
}

// One step's gates for hidden units [j, j + lanes): activates the pre-activations in `a`
// (i, f, g, o blocks of H) in place and writes the cell state and the output.
template <class V>
inline void forward_gates(float* a, const float* c_prev, float* c, float* h, int64_t H, int64_t j) {
  const V i = sigmoid(load<V>(a + j)), f = sigmoid(load<V>(a + H + j));
  const V g = tanh_(load<V>(a + 2 * H + j)), o = sigmoid(load<V>(a + 3 * H + j));
  const V cell = f * load<V>(c_prev + j) + i * g;
  store(a + j, i);
  store(a + H + j, f);
  store(a + 2 * H + j, g);
  store(a + 3 * H + j, o);
  store(c + j, cell);
  store(h + j, o * tanh_(cell));
}

// One step back: the pre-activation gradients `dg` from the activated gates, the cell state
// and the incoming gradients; dc_next becomes the gradient for the previous step's cell.
template <class V>
inline void backward_gates(const float* a, const float* c, const float* c_prev, const float* dh, const float* dc,
                           const float* dh_next, float* dc_next, float* dg, int64_t H, int64_t j) {
  const V i = load<V>(a + j), f = load<V>(a + H + j), g = load<V>(a + 2 * H + j), o = load<V>(a + 3 * H + j);
  const V tc = tanh_(load<V>(c + j));
  const V dht = load<V>(dh + j) + load<V>(dh_next + j);
  const V dct = load<V>(dc_next + j) + load<V>(dc + j) + dht * o * (1.f - tc * tc);
  store(dg + j, dct * g * i * (1.f - i));
  store(dg + H + j, dct * load<V>(c_prev + j) * f * (1.f - f));
  store(dg + 2 * H + j, dct * i * (1.f - g * g));
  store(dg + 3 * H + j, dht * tc * o * (1.f - o));
  store(dc_next + j, dct * f);
}

// fn<f8>(j) for whole groups of 8 hidden units, fn<float>(j) for the rest.
template <class F>
inline void over_hidden(int64_t H, F fn) {
  int64_t j = 0;
  for (; j + 8 <= H; j += 8) fn(f8{}, j);
  for (; j < H; ++j) fn(0.f, j);
}

// Matrix products of the recurrence: out (rows x n) += a (rows x k) @ m (k x n).
//
// Several rows: blocks of kRows rows x kPanel columns stay in registers across the whole k
// loop, reading m from `panels`, m re-laid as column strips of kPanel (panel p holds
// m[0..k)[p*kPanel .. (p+1)*kPanel) contiguously). Reading m's strips in place strides 4 KiB
// between rows, and those rows all compete for the same few L1 cache sets.
constexpr int64_t kRows = 4;
constexpr int64_t kPanel = 16;

// panels of m, where m (k x n) is given as `src` or, if `transposed`, as src = m^T (n x k).
void pack_panels(const float* src, int64_t k, int64_t n, bool transposed, float* panels) {
  for (int64_t p = 0; p < n / kPanel; ++p)
    for (int64_t q = 0; q < k; ++q)
      for (int64_t jj = 0; jj < kPanel; ++jj) {
        const int64_t j = p * kPanel + jj;
        panels[(p * k + q) * kPanel + jj] = transposed ? src[j * k + q] : src[q * n + j];
      }
}

// Needs n % kPanel == 0.
void gemm_acc(int64_t rows, int64_t k, int64_t n, const float* a, int64_t lda, const float* panels, float* out,
              int64_t ldo) {
  int64_t r = 0;
#if defined(__AVX2__) && defined(__FMA__)
  for (; r + kRows <= rows; r += kRows) {
    for (int64_t p = 0; p < n / kPanel; ++p) {
      const float* panel = panels + p * k * kPanel;
      float* o = out + r * ldo + p * kPanel;
      __m256 acc[kRows][2];
      for (int64_t i = 0; i < kRows; ++i) {
        acc[i][0] = _mm256_loadu_ps(o + i * ldo);
        acc[i][1] = _mm256_loadu_ps(o + i * ldo + 8);
      }
      for (int64_t q = 0; q < k; ++q) {
        const __m256 m0 = _mm256_loadu_ps(panel + q * kPanel), m1 = _mm256_loadu_ps(panel + q * kPanel + 8);
        for (int64_t i = 0; i < kRows; ++i) {
          const __m256 ai = _mm256_broadcast_ss(a + (r + i) * lda + q);
          acc[i][0] = _mm256_fmadd_ps(ai, m0, acc[i][0]);
          acc[i][1] = _mm256_fmadd_ps(ai, m1, acc[i][1]);
        }
      }
      for (int64_t i = 0; i < kRows; ++i) {
        _mm256_storeu_ps(o + i * ldo, acc[i][0]);
        _mm256_storeu_ps(o + i * ldo + 8, acc[i][1]);
      }
    }
  }
#endif
  for (; r < rows; ++r)
    for (int64_t p = 0; p < n / kPanel; ++p) {
      float* o = out + r * ldo + p * kPanel;
      for (int64_t q = 0; q < k; ++q) {
        const float ar = a[r * lda + q];
        const float* mq = panels + (p * k + q) * kPanel;
#pragma omp simd
        for (int64_t jj = 0; jj < kPanel; ++jj) o[jj] += ar * mq[jj];
      }
    }
}

// out (n) += a (k) @ m (k x n) given mt = m^T (n x k, row-major): a matrix-vector product as
// dot products, so that the weights stream contiguously (one batch row: bandwidth-bound).
void gemv_acc(int64_t k, int64_t n, const float* a, const float* mt, float* out) {
  int64_t j = 0;
#if defined(__AVX2__) && defined(__FMA__)
  if (k % 8 == 0) {
    for (; j + 4 <= n; j += 4) {
      __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
      for (int64_t q = 0; q < k; q += 8) {
        const __m256 aq = _mm256_loadu_ps(a + q);
        for (int64_t i = 0; i < 4; ++i) acc[i] = _mm256_fmadd_ps(aq, _mm256_loadu_ps(mt + (j + i) * k + q), acc[i]);
      }
      for (int64_t i = 0; i < 4; ++i) {
        const __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(acc[i]), _mm256_extractf128_ps(acc[i], 1));
        const __m128 s2 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        out[j + i] += _mm_cvtss_f32(_mm_add_ss(s2, _mm_shuffle_ps(s2, s2, 1)));
      }
    }
  }
#endif
  for (; j < n; ++j) {
    float sum = 0.f;
#pragma omp simd reduction(+ : sum)
    for (int64_t q = 0; q < k; ++q) sum += a[q] * mt[j * k + q];
    out[j] += sum;
  }
}

// What a direction's recurrence multiplies by, m = W_hh^T (H x 4H) forward or W_hh (4H x H)
// backward: as panels for a batch of several rows, else as m^T for dot products.
struct Weights {
  std::vector<float> panels, transposed;
  const float* mt;  // m^T, when there are no panels (W_hh itself, or `transposed`)
};

// out += a @ m for `rows` rows.
void matmul_acc(int64_t rows, int64_t k, int64_t n, const float* a, int64_t lda, const Weights& m, float* out,
                int64_t ldo) {
  if (!m.panels.empty()) {
    gemm_acc(rows, k, n, a, lda, m.panels.data(), out, ldo);
    return;
  }
  for (int64_t r = 0; r < rows; ++r) gemv_acc(k, n, a + r * lda, m.mt, out + r * ldo);
}

// m = W_hh^T (forward) or W_hh (backward) for every direction's W_hh (4H, H). Only the form
// matmul_acc will read is built: panels for a batch of several rows (when n allows), m^T
// otherwise (W_hh itself forward; a transposed copy backward).
std::vector<Weights> prepare(const std::vector<const float*>& w, const Shape& s, bool forward) {
  const int64_t G = 4 * s.h, k = forward ? s.h : G, n = forward ? G : s.h;
  const bool panels = s.b > 1 && n % kPanel == 0;
  std::vector<Weights> out(s.d);
  // Forward without panels reads W_hh in place: nothing to copy, so no thread to start.
  const int64_t work = panels || !forward ? s.d * G * s.h : 0;
  ms_zoo::parallel_for(s.d, work, [&](int64_t d) {
    const float* w_d = w[d];
    Weights& m = out[d];
    m.mt = w_d;
    if (panels) {
      m.panels.resize(k * n);
      pack_panels(w_d, k, n, forward, m.panels.data());
    } else if (!forward) {
      m.transposed.resize(G * s.h);
      for (int64_t i = 0; i < G; ++i)
        for (int64_t j = 0; j < s.h; ++j) m.transposed[j * G + i] = w_d[i * s.h + j];
      m.mt = m.transposed.data();
    }
  });
  return out;
}

// Splits (direction, block of batch rows) work items over the cores; each item runs its whole
// sequence. Blocks are multiples of kRows so the register-blocked product applies.
template <class F>
void for_each_sequence(const Shape& s, int64_t work_per_row, F fn) {
  const int64_t blocks_per_dir = std::max<int64_t>(1, std::min(s.b / kRows, ms_zoo::usable_cores()));
  ms_zoo::parallel_for(s.d * blocks_per_dir, work_per_row * s.b * s.d, [&](int64_t item) {
    const int64_t dir = item / blocks_per_dir, block = item % blocks_per_dir;
    const int64_t units = (s.b + kRows - 1) / kRows;  // kRows-row units, split evenly
    const int64_t b0 = std::min(s.b, units * block / blocks_per_dir * kRows);
    const int64_t b1 = std::min(s.b, units * (block + 1) / blocks_per_dir * kRows);
    if (b1 > b0) fn(dir, b0, b1);
  });
}

// The forward recurrence. Direction d reads its input projections from gates_in[d], whose rows
// (one per time step and batch row) are `stride` floats apart.
void forward(const Shape& s, const std::vector<const float*>& gates_in, int64_t stride,
             const std::vector<const float*>& w, float* h, float* c, float* act) {
  const int64_t H = s.h, G = 4 * s.h, row_g = s.d * G, row_h = s.d * H;
  const std::vector<Weights> weights = prepare(w, s, true);
  for_each_sequence(s, s.t * G * H, [&](int64_t dir, int64_t b0, int64_t b1) {
    const int64_t rows = b1 - b0;
    const Weights& m = weights[dir];
    std::vector<float> zeros(rows * H, 0.f);
    for (int64_t step = 0; step < s.t; ++step) {
      const int64_t t = dir == 0 ? step : s.t - 1 - step;
      const int64_t prev = dir == 0 ? t - 1 : t + 1;
      // Pre-activations accumulate in `act` and are activated in place.
      float* a = act + (t * s.b + b0) * row_g + dir * G;
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(a + r * row_g, gates_in[dir] + (t * s.b + b0 + r) * stride, G * sizeof(float));
      const bool first = step == 0;
      const float* h_prev = first ? zeros.data() : h + (prev * s.b + b0) * row_h + dir * H;
      const float* c_prev = first ? zeros.data() : c + (prev * s.b + b0) * row_h + dir * H;
      const int64_t ld_prev = first ? H : row_h;
      matmul_acc(rows, H, G, h_prev, ld_prev, m, a, row_g);
      for (int64_t r = 0; r < rows; ++r) {
        float* ar = a + r * row_g;
        const float* cp = c_prev + r * ld_prev;
        float* cr = c + (t * s.b + b0 + r) * row_h + dir * H;
        float* hr = h + (t * s.b + b0 + r) * row_h + dir * H;
        over_hidden(H, [&](auto lanes, int64_t j) { forward_gates<decltype(lanes)>(ar, cp, cr, hr, H, j); });
      }
    }
  });
}

// params: gates_in_0, w_0[, gates_in_1, w_1] | h, c, act.
int lstm_forward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  const int directions = (nparam - 3) / 2;
  if ((directions != 1 && directions != 2) || nparam != 2 * directions + 3 || ndims[0] != 3 || ndims[1] != 2 ||
      !ms_zoo::all_float32(dtypes, 0, nparam))
    return 1;
  const Shape s{shapes[0][0], shapes[0][1], directions, shapes[1][1]};
  std::vector<const float*> gates_in, w;
  for (int d = 0; d < directions; ++d) {
    gates_in.push_back(static_cast<const float*>(params[2 * d]));
    w.push_back(static_cast<const float*>(params[2 * d + 1]));
  }
  forward(s, gates_in, 4 * s.h, w, static_cast<float*>(params[2 * directions]),
          static_cast<float*>(params[2 * directions + 1]), static_cast<float*>(params[2 * directions + 2]));
  return 0;
}

// Inference with the input projections done here too, for all directions at once, on weights
// packed once (MindSpore's MatMul ran these at ~70 GFLOP/s at batch 1, ~0.75 ms of CRNN's 8):
// params: x (T, B, K), panels (D*4H/kPanel, K, kPanel) of [W_ih_0; W_ih_1]^T, bias (D*4H)
// (b_ih + b_hh of each direction), w_hh_0[, w_hh_1] | h, c, act.
int lstm_forward_projected(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  const int directions = nparam - 6;
  if ((directions != 1 && directions != 2) || ndims[0] != 3 || ndims[1] != 3 || ndims[2] != 1 ||
      ndims[3] != 2 || !ms_zoo::all_float32(dtypes, 0, nparam))
    return 1;
  const Shape s{shapes[0][0], shapes[0][1], directions, shapes[3][1]};
  const int64_t K = shapes[0][2], N = directions * 4 * s.h, rows = s.t * s.b;
  if (shapes[1][0] * kPanel != N || shapes[1][1] != K || shapes[1][2] != kPanel || shapes[2][0] != N) return 1;
  for (int d = 0; d < directions; ++d)
    if (ndims[3 + d] != 2 || shapes[3 + d][0] != 4 * s.h || shapes[3 + d][1] != s.h) return 1;
  const float* x = static_cast<const float*>(params[0]);
  const float* panels = static_cast<const float*>(params[1]);
  const float* bias = static_cast<const float*>(params[2]);
  float* gates = ms_zoo::scratch<0>(rows * N);
  ms_zoo::parallel_for(N / kPanel, rows * N * K, [&](int64_t p) {
    for (int64_t r = 0; r < rows; ++r) std::memcpy(gates + r * N + p * kPanel, bias + p * kPanel, kPanel * sizeof(float));
    gemm_acc(rows, K, kPanel, x, K, panels + p * K * kPanel, gates + p * kPanel, N);
  });
  std::vector<const float*> gates_in, w;
  for (int d = 0; d < directions; ++d) {
    gates_in.push_back(gates + d * 4 * s.h);
    w.push_back(static_cast<const float*>(params[3 + d]));
  }
  forward(s, gates_in, N, w, static_cast<float*>(params[3 + directions]),
          static_cast<float*>(params[4 + directions]), static_cast<float*>(params[5 + directions]));
  return 0;
}

// params: dh (T,B,D*H), dc (T,B,D*H) (the gradients of the outputs h and c), c, act, w_0[, w_1]
//       | d_gates_in_0[, d_gates_in_1] (T,B,4H): the gradients of the pre-activations, which
// are also those of gates_in (the caller derives the weight gradients with matrix products).
int lstm_backward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  const int directions = (nparam - 4) / 2;
  if ((directions != 1 && directions != 2) || nparam != 2 * directions + 4 || ndims[0] != 3 || ndims[4] != 2 ||
      !ms_zoo::all_float32(dtypes, 0, nparam))
    return 1;
  const Shape s{shapes[0][0], shapes[0][1], directions, shapes[4][1]};
  const float* dh = static_cast<const float*>(params[0]);
  const float* dc_out = static_cast<const float*>(params[1]);
  const float* c = static_cast<const float*>(params[2]);
  const float* act = static_cast<const float*>(params[3]);
  std::vector<const float*> w;
  std::vector<float*> dgates;
  for (int d = 0; d < directions; ++d) {
    w.push_back(static_cast<const float*>(params[4 + d]));
    dgates.push_back(static_cast<float*>(params[4 + directions + d]));
  }
  const int64_t H = s.h, G = 4 * s.h, row_g = s.d * G, row_h = s.d * H;
  const std::vector<Weights> weights = prepare(w, s, false);
  for_each_sequence(s, 2 * s.t * G * H, [&](int64_t dir, int64_t b0, int64_t b1) {
    const int64_t rows = b1 - b0;
    const Weights& m = weights[dir];
    // Gradients flowing back to the previous step's hidden and cell states.
    std::vector<float> dh_next(rows * H, 0.f), dc_next(rows * H, 0.f), zeros(rows * H, 0.f);
    for (int64_t step = s.t - 1; step >= 0; --step) {
      const int64_t t = dir == 0 ? step : s.t - 1 - step;
      const int64_t prev = dir == 0 ? t - 1 : t + 1;
      const bool first = step == 0;
      float* dg = dgates[dir] + (t * s.b + b0) * G;
      for (int64_t r = 0; r < rows; ++r) {
        const float* ar = act + (t * s.b + b0 + r) * row_g + dir * G;
        const float* cr = c + (t * s.b + b0 + r) * row_h + dir * H;
        const float* dhr = dh + (t * s.b + b0 + r) * row_h + dir * H;
        const float* dcr = dc_out + (t * s.b + b0 + r) * row_h + dir * H;
        const float* cp = first ? zeros.data() + r * H : c + (prev * s.b + b0 + r) * row_h + dir * H;
        float* dhn = dh_next.data() + r * H;
        float* dcn = dc_next.data() + r * H;
        float* dgr = dg + r * G;
        over_hidden(H, [&](auto lanes, int64_t j) {
          backward_gates<decltype(lanes)>(ar, cr, cp, dhr, dcr, dhn, dcn, dgr, H, j);
        });
      }
      if (first) break;
      // dh_{t-1} = d_gates W_hh (rows x 4H @ 4H x H)
      std::fill(dh_next.begin(), dh_next.end(), 0.f);
      matmul_acc(rows, G, H, dg, G, m, dh_next.data(), H);
    }
  });
  return 0;
}

}  // namespace

MS_ZOO_AOT_ENTRY(LstmForward, lstm_forward)
MS_ZOO_AOT_ENTRY(LstmForwardProjected, lstm_forward_projected)
MS_ZOO_AOT_ENTRY(LstmBackward, lstm_backward)
