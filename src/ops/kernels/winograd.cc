// Winograd F(m x m, 3 x 3) transforms for 3x3, stride-1, padding-1 convolutions (NCHW,
// float32) on MindSpore's CPU backend, loaded as ``ops.Custom(..., func_type="aot")``.
//
// Why: MindSpore's CPU Conv2D runs 3x3 convolutions through oneDNN's GEMM on the plain NCHW
// layout at ~100 GFLOP/s here; CRNN spent ~80% of a training step in them. Winograd's
// algorithm turns a 3x3 convolution into a = (m+2)^2 independent matrix products over the
// channels with 4x (m = 4) or 2.25x (m = 2) fewer multiply-adds. This file holds only the
// linear transforms around those products; the products run through MindSpore's BatchMatMul,
// so its GEMM and its automatic gradients do the heavy work.
//
// With a = m + 2 and T = N * TH * TW tiles (TH = ceil(H / m), TW = ceil(W / m)):
//   WinogradFilter:  w (K, C, 3, 3)           -> U (a*a, K, C)          U = G w G^T
//   WinogradInput:   x (N, C, H, W)           -> V (a*a, C, T)          V = B^T d B per tile
//   WinogradOutput:  M (a*a, K, N, TH, TW)    -> y (N, K, TH*m, TW*m)   y = A^T M A per tile
// and their adjoints (the transposed linear maps), which are their gradients:
//   WinogradFilterAdjoint: dU (a*a, K, C), w   -> dw (K, C, 3, 3)  (w gives only the shape)
//   WinogradInputAdjoint:  dV (a*a, C, T), x   -> dx (N, C, H, W)  (x gives only the shape)
//   WinogradOutputAdjoint: dy (N, K, TH*m, TW*m) -> dM (a*a, K, N, TH, TW)
// The output is whole tiles; the caller slices it to (H, W). The tile side m is part of each
// function name (suffix F2 or F4).
//
// Vectorisation: every transform runs over all tiles of a tile row at once, lanes = tiles.
// A tile row's input columns are stored "phased" (column j at [j % m][j / m]), so the column
// j = tile*m + k that tile `tile` needs is [k % m][tile + k / m]: contiguous across tiles.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#if defined(__AVX2__)
#include <immintrin.h>
#endif

#include "common.h"

namespace {

template <int M> struct Matrices;

// F(2, 3) (Lavin & Gray, 2015).
template <> struct Matrices<2> {
  static constexpr int a = 4;
  static constexpr float BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr float AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
  static constexpr float G[4][3] = {{1, 0, 0}, {.5f, .5f, .5f}, {.5f, -.5f, .5f}, {0, 0, 1}};
};
constexpr float Matrices<2>::BT[4][4];
constexpr float Matrices<2>::AT[2][4];
constexpr float Matrices<2>::G[4][3];

// F(4, 3) with interpolation points 0, +-1, +-2 and infinity.
template <> struct Matrices<4> {
  static constexpr int a = 6;
  static constexpr float BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                     {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr float AT[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
  static constexpr float G[6][3] = {{1.f / 4, 0, 0},           {-1.f / 6, -1.f / 6, -1.f / 6},
                                    {-1.f / 6, 1.f / 6, -1.f / 6}, {1.f / 24, 1.f / 12, 1.f / 6},
                                    {1.f / 24, -1.f / 12, 1.f / 6}, {0, 0, 1}};
};
constexpr float Matrices<4>::BT[6][6];
constexpr float Matrices<4>::AT[4][6];
constexpr float Matrices<4>::G[6][3];

constexpr int kLanes = 8;  // one AVX register of floats
inline int64_t round_up(int64_t v, int64_t to) { return (v + to - 1) / to * to; }

// o[i] += l * x[i]; vectorised, and a no-op for the constant zeros of the transform matrices
// once the callers' loops are unrolled.
inline void axpy(float* o, float l, const float* x, int64_t len) {
  if (l == 0.f) return;
  for (int64_t i = 0; i < len; ++i) o[i] += l * x[i];
}

// The same over exactly kLanes values: one vector multiply-add.
inline void axpy_lanes(float* o, float l, const float* x) {
  if (l == 0.f) return;
#pragma GCC unroll 8
  for (int i = 0; i < kLanes; ++i) o[i] += l * x[i];
}

struct Tiles {
  int64_t n, c, h, w, th, tw;
  int64_t count() const { return n * th * tw; }
  // Tile-row buffers hold `lanes()` tiles (tw rounded up to whole vectors; the extra lanes are zero).
  int64_t lanes() const { return round_up(tw, kLanes); }
};

// Calls plane_fn(plane, tiles, stride) for every (image, channel) plane, where `plane` is the
// plane's offset in NCHW data and tiles[position * stride + t] is its tile t at that position
// of the tile array `array` ((m+2)^2 positions, C, T).
//
// The planes of one channel and a group of images work on a small staging copy of their
// part of `array`: filled from it first when the transform reads `array` (Reads), copied into
// it afterwards when it writes `array`. Why: the positions of `array` lie C * T floats apart,
// often a multiple of 4 KiB, so writing a plane's tiles straight to all (m+2)^2 positions
// lands every store in the same cache set (the transforms ran ~2x slower that way).
template <int M, bool Reads, class F>
void for_each_plane(const Tiles& g, float* array, F plane_fn) {
  constexpr int positions = Matrices<M>::a * Matrices<M>::a;
  constexpr int64_t kStageTiles = 256;  // a 36 x 256 float stage fits in L1/L2
  const int64_t per_image = g.th * g.tw, T = g.count();
  const int64_t group = std::max<int64_t>(1, std::min<int64_t>(g.n, kStageTiles / per_image));
  const int64_t groups = (g.n + group - 1) / group;
  ms_zoo::parallel_for(g.c * groups, g.c * g.n * g.h * g.w * 16, [&](int64_t item) {
    const int64_t channel = item / groups, first = item % groups * group;
    const int64_t images = std::min(group, g.n - first), count = images * per_image;
    float* stage = ms_zoo::scratch<1>(positions * count);
    float* part = array + channel * T + first * per_image;
    if (Reads)
      for (int pos = 0; pos < positions; ++pos)
        std::memcpy(stage + pos * count, part + pos * g.c * T, sizeof(float) * count);
    for (int64_t i = 0; i < images; ++i)
      plane_fn(((first + i) * g.c + channel) * g.h * g.w, stage + i * per_image, count);
    if (!Reads)
      for (int pos = 0; pos < positions; ++pos)
        std::memcpy(part + pos * g.c * T, stage + pos * count, sizeof(float) * count);
  });
}

// The input plane zero-padded by one pixel on every side, with the columns of each padded row
// stored phased (see the top of the file): padded column j at [j % M][j / M], each phase
// `len` floats (whole vectors of tiles plus the one column the last tile reaches into).
template <int M>
struct PhasedPlane {
  int64_t len, row, size;
  explicit PhasedPlane(const Tiles& g) : len(g.lanes() + 1), row(M * len), size((g.th * M + 2) * row) {}
  // Where input pixel (y, x) of the unpadded plane lives.
  int64_t pixel(int64_t y, int64_t x) const { return (y + 1) * row + ((x + 1) % M) * len + (x + 1) / M; }
  // Offset, within a phased row, of column k of tile t.
  int64_t column(int k, int64_t t) const { return (k % M) * len + k / M + t; }
};

template <int M>
void input_plane(const Tiles& g, const float* x, float* base, int64_t position_stride) {
  using Mat = Matrices<M>;
  constexpr int a = Mat::a;
  const PhasedPlane<M> plane(g);
  const int64_t row = plane.row;
  float* phased = ms_zoo::scratch<0>(plane.size + a * row);
  float* rows = phased + plane.size;
  std::fill_n(phased, plane.size, 0.f);
  for (int64_t y = 0; y < g.h; ++y)
    for (int64_t col = 0; col < g.w; ++col) phased[plane.pixel(y, col)] = x[y * g.w + col];
  for (int64_t ti = 0; ti < g.th; ++ti) {
    // rows = B^T d over the tile row's a padded input rows.
#pragma GCC unroll 8
    for (int p = 0; p < a; ++p) {
      std::fill_n(rows + p * row, row, 0.f);
#pragma GCC unroll 8
      for (int k = 0; k < a; ++k) axpy(rows + p * row, Mat::BT[p][k], phased + (ti * M + k) * row, row);
    }
    // V[p][q] = sum_k rows[p][column k of the tile] * BT[q][k], kLanes tiles at a time.
    for (int64_t t0 = 0; t0 < g.tw; t0 += kLanes) {
      const int64_t valid = std::min<int64_t>(kLanes, g.tw - t0);
#pragma GCC unroll 8
      for (int p = 0; p < a; ++p)
#pragma GCC unroll 8
        for (int q = 0; q < a; ++q) {
          float out[kLanes] = {};
#pragma GCC unroll 8
          for (int k = 0; k < a; ++k) axpy_lanes(out, Mat::BT[q][k], rows + p * row + plane.column(k, t0));
          std::memcpy(base + (p * a + q) * position_stride + ti * g.tw + t0, out, sizeof(float) * valid);
        }
    }
  }
}

template <int M>
void input_adjoint_plane(const Tiles& g, const float* base, int64_t position_stride, float* dx) {
  using Mat = Matrices<M>;
  constexpr int a = Mat::a;
  const PhasedPlane<M> plane(g);
  const int64_t row = plane.row;
  float* phased = ms_zoo::scratch<0>(plane.size + a * row);
  float* rows = phased + plane.size;
  std::fill_n(phased, plane.size, 0.f);
  for (int64_t ti = 0; ti < g.th; ++ti) {
    std::fill_n(rows, a * row, 0.f);
    // rows[p][column k of each tile] += dV[p][q] * BT[q][k]; neighbouring tiles share two columns.
    for (int64_t t0 = 0; t0 < g.tw; t0 += kLanes) {
      const int64_t valid = std::min<int64_t>(kLanes, g.tw - t0);
#pragma GCC unroll 8
      for (int p = 0; p < a; ++p)
#pragma GCC unroll 8
        for (int q = 0; q < a; ++q) {
          float block[kLanes] = {};
          std::memcpy(block, base + (p * a + q) * position_stride + ti * g.tw + t0, sizeof(float) * valid);
#pragma GCC unroll 8
          for (int k = 0; k < a; ++k) axpy_lanes(rows + p * row + plane.column(k, t0), Mat::BT[q][k], block);
        }
    }
    // padded input rows += B rows.
#pragma GCC unroll 8
    for (int r = 0; r < a; ++r)
#pragma GCC unroll 8
      for (int p = 0; p < a; ++p) axpy(phased + (ti * M + r) * row, Mat::BT[p][r], rows + p * row, row);
  }
  for (int64_t y = 0; y < g.h; ++y)
    for (int64_t col = 0; col < g.w; ++col) dx[y * g.w + col] = phased[plane.pixel(y, col)];
}

template <int M>
void output_plane(const Tiles& g, const float* base, int64_t position_stride, float* y) {
  using Mat = Matrices<M>;
  constexpr int a = Mat::a;
  const int64_t ow = g.tw * M;
  for (int64_t ti = 0; ti < g.th; ++ti)
    for (int64_t t0 = 0; t0 < g.tw; t0 += kLanes) {
      const int64_t valid = std::min<int64_t>(kLanes, g.tw - t0);
      float block[a * a][kLanes] = {}, half[a * M][kLanes] = {}, tile[M * M][kLanes] = {};
      for (int pq = 0; pq < a * a; ++pq)
        std::memcpy(block[pq], base + pq * position_stride + ti * g.tw + t0, sizeof(float) * valid);
      // half = M A, then tile = A^T half.
#pragma GCC unroll 8
      for (int p = 0; p < a; ++p)
#pragma GCC unroll 8
        for (int j = 0; j < M; ++j)
#pragma GCC unroll 8
          for (int q = 0; q < a; ++q) axpy_lanes(half[p * M + j], Mat::AT[j][q], block[p * a + q]);
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < M; ++j)
#pragma GCC unroll 8
          for (int p = 0; p < a; ++p) axpy_lanes(tile[i * M + j], Mat::AT[i][p], half[p * M + j]);
      for (int i = 0; i < M; ++i) {
        float* out = y + (ti * M + i) * ow + t0 * M;
        for (int64_t t = 0; t < valid; ++t)
          for (int j = 0; j < M; ++j) out[t * M + j] = tile[i * M + j][t];
      }
    }
}

template <int M>
void output_adjoint_plane(const Tiles& g, const float* dy, float* base, int64_t position_stride) {
  using Mat = Matrices<M>;
  constexpr int a = Mat::a;
  const int64_t ow = g.tw * M;
  for (int64_t ti = 0; ti < g.th; ++ti)
    for (int64_t t0 = 0; t0 < g.tw; t0 += kLanes) {
      const int64_t valid = std::min<int64_t>(kLanes, g.tw - t0);
      float tile[M * M][kLanes] = {}, half[a * M][kLanes] = {};
      for (int i = 0; i < M; ++i) {
        const float* in = dy + (ti * M + i) * ow + t0 * M;
        for (int64_t t = 0; t < valid; ++t)
          for (int j = 0; j < M; ++j) tile[i * M + j][t] = in[t * M + j];
      }
      // half = A dy, then dM = half A^T.
#pragma GCC unroll 8
      for (int p = 0; p < a; ++p)
#pragma GCC unroll 8
        for (int j = 0; j < M; ++j)
#pragma GCC unroll 8
          for (int i = 0; i < M; ++i) axpy_lanes(half[p * M + j], Mat::AT[i][p], tile[i * M + j]);
#pragma GCC unroll 8
      for (int p = 0; p < a; ++p)
#pragma GCC unroll 8
        for (int q = 0; q < a; ++q) {
          float out[kLanes] = {};
#pragma GCC unroll 8
          for (int j = 0; j < M; ++j) axpy_lanes(out, Mat::AT[j][q], half[p * M + j]);
          std::memcpy(base + (p * a + q) * position_stride + ti * g.tw + t0, out, sizeof(float) * valid);
        }
    }
}

// Filters of one output channel k, kLanes input channels at a time (lanes = input channels).
template <int M>
void filter_row(int64_t k, int64_t K, int64_t C, const float* w, float* u) {
  using Mat = Matrices<M>;
  constexpr int a = Mat::a;
  for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
    const int64_t valid = std::min<int64_t>(kLanes, C - c0);
    float taps[9][kLanes] = {}, half[a][3][kLanes], out[kLanes];
    for (int64_t l = 0; l < valid; ++l)
      for (int t = 0; t < 9; ++t) taps[t][l] = w[(k * C + c0 + l) * 9 + t];
#pragma GCC unroll 8
    for (int p = 0; p < a; ++p)
      for (int s = 0; s < 3; ++s) {
        std::fill_n(half[p][s], kLanes, 0.f);
        for (int r = 0; r < 3; ++r) axpy_lanes(half[p][s], Mat::G[p][r], taps[r * 3 + s]);
      }
#pragma GCC unroll 8
    for (int p = 0; p < a; ++p)
#pragma GCC unroll 8
      for (int q = 0; q < a; ++q) {
        std::fill_n(out, kLanes, 0.f);
        for (int s = 0; s < 3; ++s) axpy_lanes(out, Mat::G[q][s], half[p][s]);
        std::memcpy(u + ((p * a + q) * K + k) * C + c0, out, sizeof(float) * valid);
      }
  }
}

template <int M>
void filter_adjoint_row(int64_t k, int64_t K, int64_t C, const float* du, float* dw) {
  using Mat = Matrices<M>;
  constexpr int a = Mat::a;
  for (int64_t c0 = 0; c0 < C; c0 += kLanes) {
    const int64_t valid = std::min<int64_t>(kLanes, C - c0);
    float grad[a][a][kLanes] = {}, half[a][3][kLanes], taps[9][kLanes];
    for (int p = 0; p < a; ++p)
      for (int q = 0; q < a; ++q) std::memcpy(grad[p][q], du + ((p * a + q) * K + k) * C + c0, sizeof(float) * valid);
    // half = dU G, then dw = G^T half.
#pragma GCC unroll 8
    for (int p = 0; p < a; ++p)
      for (int s = 0; s < 3; ++s) {
        std::fill_n(half[p][s], kLanes, 0.f);
#pragma GCC unroll 8
        for (int q = 0; q < a; ++q) axpy_lanes(half[p][s], Mat::G[q][s], grad[p][q]);
      }
    for (int r = 0; r < 3; ++r)
      for (int s = 0; s < 3; ++s) {
        std::fill_n(taps[r * 3 + s], kLanes, 0.f);
#pragma GCC unroll 8
        for (int p = 0; p < a; ++p) axpy_lanes(taps[r * 3 + s], Mat::G[p][r], half[p][s]);
      }
    for (int64_t l = 0; l < valid; ++l)
      for (int t = 0; t < 9; ++t) dw[(k * C + c0 + l) * 9 + t] = taps[t][l];
  }
}

template <int M>
Tiles input_tiles(const int64_t* s) {
  return Tiles{s[0], s[1], s[2], s[3], (s[2] + M - 1) / M, (s[3] + M - 1) / M};
}

template <int M>
int input_transform(int nparam, void** params, int*, int64_t** shapes, const char** dtypes) {
  if (nparam != 2 || !ms_zoo::all_float32(dtypes, 0, 2)) return 1;
  const Tiles g = input_tiles<M>(shapes[0]);
  const float* x = static_cast<const float*>(params[0]);
  float* v = static_cast<float*>(params[1]);
  for_each_plane<M, false>(g, v, [&](int64_t plane, float* tiles, int64_t stride) {
    input_plane<M>(g, x + plane, tiles, stride);
  });
  return 0;
}

template <int M>
int input_adjoint(int nparam, void** params, int*, int64_t** shapes, const char** dtypes) {
  if (nparam != 3 || !ms_zoo::all_float32(dtypes, 0, 3)) return 1;
  const Tiles g = input_tiles<M>(shapes[1]);  // the forward input, for its shape
  float* dv = static_cast<float*>(params[0]);
  float* dx = static_cast<float*>(params[2]);
  for_each_plane<M, true>(g, dv, [&](int64_t plane, float* tiles, int64_t stride) {
    input_adjoint_plane<M>(g, tiles, stride, dx + plane);
  });
  return 0;
}

template <int M>
int output_transform(int nparam, void** params, int*, int64_t** shapes, const char** dtypes) {
  if (nparam != 2 || !ms_zoo::all_float32(dtypes, 0, 2)) return 1;
  const int64_t* s = shapes[0];  // (a*a, K, N, TH, TW)
  const Tiles g{s[2], s[1], s[3] * M, s[4] * M, s[3], s[4]};
  float* m = static_cast<float*>(params[0]);
  float* y = static_cast<float*>(params[1]);
  for_each_plane<M, true>(g, m, [&](int64_t plane, float* tiles, int64_t stride) {
    output_plane<M>(g, tiles, stride, y + plane);
  });
  return 0;
}

template <int M>
int output_adjoint(int nparam, void** params, int*, int64_t** shapes, const char** dtypes) {
  if (nparam != 2 || !ms_zoo::all_float32(dtypes, 0, 2)) return 1;
  const int64_t* s = shapes[0];  // dy (N, K, TH*M, TW*M)
  const Tiles g{s[0], s[1], s[2], s[3], s[2] / M, s[3] / M};
  const float* dy = static_cast<const float*>(params[0]);
  float* dm = static_cast<float*>(params[1]);
  for_each_plane<M, false>(g, dm, [&](int64_t plane, float* tiles, int64_t stride) {
    output_adjoint_plane<M>(g, dy + plane, tiles, stride);
  });
  return 0;
}

template <int M>
int filter_transform(int nparam, void** params, int*, int64_t** shapes, const char** dtypes) {
  if (nparam != 2 || !ms_zoo::all_float32(dtypes, 0, 2)) return 1;
  const int64_t K = shapes[0][0], C = shapes[0][1];
  const float* w = static_cast<const float*>(params[0]);
  float* u = static_cast<float*>(params[1]);
  ms_zoo::parallel_for(K, K * C * 64, [&](int64_t k) { filter_row<M>(k, K, C, w, u); });
  return 0;
}

template <int M>
int filter_adjoint(int nparam, void** params, int*, int64_t** shapes, const char** dtypes) {
  if (nparam != 3 || !ms_zoo::all_float32(dtypes, 0, 3)) return 1;
  const int64_t K = shapes[1][0], C = shapes[1][1];  // the weight, for its shape
  const float* du = static_cast<const float*>(params[0]);
  float* dw = static_cast<float*>(params[2]);
  ms_zoo::parallel_for(K, K * C * 64, [&](int64_t k) { filter_adjoint_row<M>(k, K, C, du, dw); });
  return 0;
}


// ---------------------------------------------------------------------------------------------
// Inference: the whole convolution in one op, with the filters transformed once beforehand.
//
// Why: at batch 1 the convolutions of CRNN ran through oneDNN's direct GEMM at ~160 GFLOP/s
// and were ~80% of the latency; transforming the filters on every call (as training must)
// costs more than Winograd saves there. Here U comes in packed for the products below, the
// products are register-blocked by hand, and the output transform adds the bias and applies
// the activation before the tile leaves the registers.
//
//   WinogradConvF2[Relu|Relu6]: x (N, C, H, W), U (K/16, a*a, C, 16), bias (K) -> y (N, K, H, W)
//
// U[j][pq][c][l] is the transformed filter of output channel 16 j + l (WinogradFilter's
// U[pq][16 j + l][c]); K must be a multiple of 16. A panel's filters at all points are
// contiguous: at batch 1 they are read once per call, mostly from memory, as one stream.
// The input transform writes V as (a*a, blocks, C, kRows): the kRows tiles of a block side by
// side for every channel, so the product of one block with one panel of 16 output channels
// reads both operands contiguously. The template takes m = 4 too; only F(2, 3) is exported
// (src/ops/winograd.py says why).

constexpr int kRows = 6;     // tiles per register block
constexpr int kPanel = 16;   // output channels per register block: two AVX vectors
constexpr int64_t kChunkBlocks = 8;  // blocks whose products share one pass over a filter panel

// Floats between the V of consecutive transform points. Padded by one cache line: unpadded
// (often a multiple of 4 KiB) the stores of one tile's a*a values all land in the same cache
// set and evict each other.
inline int64_t point_stride(int64_t blocks, int64_t C) { return blocks * C * kRows + 16; }

// out += coefficient * value, skipping the transform matrices' zeros and ones once unrolled.
template <class T>
inline void add_scaled(T& out, float coefficient, const T& value) {
  if (coefficient == 0.f) return;
  if (coefficient == 1.f) {
    out += value;
  } else if (coefficient == -1.f) {
    out -= value;
  } else {
    out += coefficient * value;
  }
}

// out += coefficients x in, for a transform matrix and a tile (of floats or of vectors).
template <int Rows, int Inner, int Cols, class T>
inline void add_left_product(const float (&coefficients)[Rows][Inner], const T (&in)[Inner][Cols],
                             T (&out)[Rows][Cols]) {
#pragma GCC unroll 8
  for (int i = 0; i < Rows; ++i)
#pragma GCC unroll 8
    for (int k = 0; k < Inner; ++k)
#pragma GCC unroll 8
      for (int j = 0; j < Cols; ++j) add_scaled(out[i][j], coefficients[i][k], in[k][j]);
}

template <int M>
void pack_input(const Tiles& g, int64_t blocks, const float* x, float* v) {
  using Mat = Matrices<M>;
  constexpr int a = Mat::a;
  const int64_t T = g.count(), C = g.c, stride = point_stride(blocks, C);
  ms_zoo::parallel_for(C, C * T * a * a * 4, [&](int64_t c) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t n = t / (g.th * g.tw), ti = t / g.tw % g.th, tj = t % g.tw;
      const float* plane = x + (n * C + c) * g.h * g.w;
      const int64_t top = ti * M - 1, left = tj * M - 1;
      float d[a][a];
      const bool inside = top >= 0 && left >= 0 && top + a <= g.h && left + a <= g.w;
#pragma GCC unroll 8
      for (int k = 0; k < a; ++k)
#pragma GCC unroll 8
        for (int l = 0; l < a; ++l) {
          const int64_t yy = top + k, xx = left + l;
          d[k][l] = inside || (yy >= 0 && yy < g.h && xx >= 0 && xx < g.w) ? plane[yy * g.w + xx] : 0.f;
        }
      float half[a][a] = {};  // B^T d
      add_left_product(Mat::BT, d, half);
      float* out = v + ((t / kRows) * C + c) * kRows + t % kRows;
#pragma GCC unroll 8
      for (int p = 0; p < a; ++p)
#pragma GCC unroll 8
        for (int q = 0; q < a; ++q) {
          float value = 0.f;
#pragma GCC unroll 8
          for (int l = 0; l < a; ++l) add_scaled(value, Mat::BT[q][l], half[p][l]);
          out[(p * a + q) * stride] = value;
        }
    }
  });
}

// out (Rows x kPanel) = sum over c of v[c][r] * u[c][0..kPanel): Rows tiles of one block times
// one panel of transformed filters, at one transform point.
template <int Rows>
void block_product(const float* v, const float* u, int64_t C, float* out) {
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc[Rows][2];
#pragma GCC unroll 6
  for (int r = 0; r < Rows; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  for (int64_t c = 0; c < C; ++c) {
    const __m256 u0 = _mm256_loadu_ps(u + c * kPanel), u1 = _mm256_loadu_ps(u + c * kPanel + kLanes);
#pragma GCC unroll 6
    for (int r = 0; r < Rows; ++r) {
      const __m256 vr = _mm256_broadcast_ss(v + c * kRows + r);
      acc[r][0] = _mm256_fmadd_ps(vr, u0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(vr, u1, acc[r][1]);
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < Rows; ++r) {
    _mm256_storeu_ps(out + r * kPanel, acc[r][0]);
    _mm256_storeu_ps(out + r * kPanel + kLanes, acc[r][1]);
  }
#else
  std::fill_n(out, Rows * kPanel, 0.f);
  for (int64_t c = 0; c < C; ++c)
    for (int r = 0; r < Rows; ++r)
      for (int l = 0; l < kPanel; ++l) out[r * kPanel + l] += v[c * kRows + r] * u[c * kPanel + l];
#endif
}

inline void block_product(int rows, const float* v, const float* u, int64_t C, float* out) {
  switch (rows) {
    case 1: return block_product<1>(v, u, C, out);
    case 2: return block_product<2>(v, u, C, out);
    case 3: return block_product<3>(v, u, C, out);
    case 4: return block_product<4>(v, u, C, out);
    case 5: return block_product<5>(v, u, C, out);
    default: return block_product<6>(v, u, C, out);
  }
}

typedef float Lanes __attribute__((vector_size(kLanes * sizeof(float))));

// y tiles of `rows` tiles from their products prod[pq][r][0..kPanel) (one panel of output
// channels starting at k0): A^T M A, plus the bias, then the activation.
template <int M, int Activation>
void output_tiles(const Tiles& g, int64_t first_tile, int rows, const float* prod, int64_t K, int64_t k0,
                  const float* bias, float* y) {
  using Mat = Matrices<M>;
  constexpr int a = Mat::a;
  constexpr float high = ms_zoo::clamp_high(Activation);
  for (int r = 0; r < rows; ++r) {
    const int64_t t = first_tile + r;
    const int64_t n = t / (g.th * g.tw), ti = t / g.tw % g.th, tj = t % g.tw;
    for (int half = 0; half < kPanel / kLanes; ++half) {
      Lanes m[a][a], side[M][a] = {}, tile[M][M] = {}, b;
      std::memcpy(&b, bias + k0 + half * kLanes, sizeof(b));
#pragma GCC unroll 8
      for (int p = 0; p < a; ++p)
#pragma GCC unroll 8
        for (int q = 0; q < a; ++q) std::memcpy(&m[p][q], prod + ((p * a + q) * kRows + r) * kPanel + half * kLanes, sizeof(b));
      add_left_product(Mat::AT, m, side);  // A^T M
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
        for (int j = 0; j < M; ++j) {
#pragma GCC unroll 8
          for (int q = 0; q < a; ++q) add_scaled(tile[i][j], Mat::AT[j][q], side[i][q]);
          tile[i][j] += b;
          if (Activation != 0) {
            for (int l = 0; l < kLanes; ++l) tile[i][j][l] = std::min(std::max(tile[i][j][l], 0.f), high);
          }
        }
      for (int i = 0; i < M; ++i) {
        const int64_t yy = ti * M + i;
        if (yy >= g.h) break;
        for (int j = 0; j < M; ++j) {
          const int64_t xx = tj * M + j;
          if (xx >= g.w) break;
          float* out = y + ((n * K + k0 + half * kLanes) * g.h + yy) * g.w + xx;
          for (int l = 0; l < kLanes; ++l) out[l * g.h * g.w] = tile[i][j][l];
        }
      }
    }
  }
}

template <int M, int Activation>
int inference_conv(int nparam, void** params, int*, int64_t** shapes, const char** dtypes) {
  if (nparam != 4 || !ms_zoo::all_float32(dtypes, 0, 4)) return 1;
  constexpr int a = M + 2;
  const Tiles g = input_tiles<M>(shapes[0]);
  const int64_t C = g.c, panels = shapes[1][0], K = panels * kPanel;
  if (shapes[1][1] != a * a || shapes[1][2] != C || shapes[1][3] != kPanel || shapes[2][0] != K) return 1;
  const float* x = static_cast<const float*>(params[0]);
  const float* u = static_cast<const float*>(params[1]);
  const float* bias = static_cast<const float*>(params[2]);
  float* y = static_cast<float*>(params[3]);
  const int64_t T = g.count(), blocks = (T + kRows - 1) / kRows;
  const int64_t chunks = (blocks + kChunkBlocks - 1) / kChunkBlocks;
  float* v = ms_zoo::scratch<2>(a * a * point_stride(blocks, C));
  pack_input<M>(g, blocks, x, v);
  // One item: one panel of output channels for one chunk of blocks. A panel's filters are
  // read once per chunk and stay in cache over the chunk's blocks; a chunk's V stays in cache
  // over the panels, which are consecutive items.
  ms_zoo::parallel_for(chunks * panels, T * K * C * a * a, [&](int64_t item) {
    const int64_t chunk = item / panels, j = item % panels;
    const int64_t first = chunk * kChunkBlocks, last = std::min(blocks, first + kChunkBlocks);
    float* prod = ms_zoo::scratch<3>(kChunkBlocks * a * a * kRows * kPanel);
    for (int pq = 0; pq < a * a; ++pq) {
      const float* panel = u + (j * a * a + pq) * C * kPanel;
      for (int64_t b = first; b < last; ++b)
        block_product(static_cast<int>(std::min<int64_t>(kRows, T - b * kRows)),
                      v + pq * point_stride(blocks, C) + b * C * kRows, panel, C,
                      prod + ((b - first) * a * a + pq) * kRows * kPanel);
    }
    for (int64_t b = first; b < last; ++b)
      output_tiles<M, Activation>(g, b * kRows, static_cast<int>(std::min<int64_t>(kRows, T - b * kRows)),
                                  prod + (b - first) * a * a * kRows * kPanel, K, j * kPanel, bias, y);
  });
  return 0;
}

}  // namespace

MS_ZOO_AOT_ENTRY(WinogradFilterF2, filter_transform<2>)
MS_ZOO_AOT_ENTRY(WinogradFilterF4, filter_transform<4>)
MS_ZOO_AOT_ENTRY(WinogradFilterAdjointF2, filter_adjoint<2>)
MS_ZOO_AOT_ENTRY(WinogradFilterAdjointF4, filter_adjoint<4>)
MS_ZOO_AOT_ENTRY(WinogradInputF2, input_transform<2>)
MS_ZOO_AOT_ENTRY(WinogradInputF4, input_transform<4>)
MS_ZOO_AOT_ENTRY(WinogradInputAdjointF2, input_adjoint<2>)
MS_ZOO_AOT_ENTRY(WinogradInputAdjointF4, input_adjoint<4>)
MS_ZOO_AOT_ENTRY(WinogradOutputF2, output_transform<2>)
MS_ZOO_AOT_ENTRY(WinogradOutputF4, output_transform<4>)
MS_ZOO_AOT_ENTRY(WinogradOutputAdjointF2, output_adjoint<2>)
MS_ZOO_AOT_ENTRY(WinogradOutputAdjointF4, output_adjoint<4>)
MS_ZOO_AOT_ENTRY(WinogradConvF2, (inference_conv<2, 0>))
MS_ZOO_AOT_ENTRY(WinogradConvF2Relu, (inference_conv<2, 1>))
MS_ZOO_AOT_ENTRY(WinogradConvF2Relu6, (inference_conv<2, 6>))
