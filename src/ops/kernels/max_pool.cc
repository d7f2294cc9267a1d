// Non-overlapping 2-D max pooling (kernel == stride, no padding, trailing rows/columns that do
// not fill a window are dropped) over (N, C, H, W) float32, for MindSpore's CPU backend as
// ``ops.Custom(..., func_type="aot")``.
//
// Why: MindSpore's CPU MaxPoolGrad recomputes the pooling and was ~12% of a CRNN training
// step; these loops route each gradient straight to its window's maximum.
//
// Aot calling convention: int f(int nparam, void** params, int* ndims, int64_t** shapes,
// const char** dtypes, void* stream, void* extra), inputs first, then the output.
#include <cstdint>
#include <cstring>

#include "common.h"

namespace {

struct Geometry {
  int64_t planes, h, w, oh, ow, kh, kw;
};

Geometry geometry(int64_t** shapes, int image, int pooled, const int32_t* kernel) {
  Geometry g;
  g.planes = shapes[image][0] * shapes[image][1];
  g.h = shapes[image][2];
  g.w = shapes[image][3];
  g.oh = shapes[pooled][2];
  g.ow = shapes[pooled][3];
  g.kh = kernel[0];
  g.kw = kernel[1];
  return g;
}

// Offset (within the plane) of the first maximum of the window at (oy, ox), in row-major
// order: the element MaxPool's gradient goes to.
inline int64_t argmax(const Geometry& g, const float* x, int64_t oy, int64_t ox) {
  int64_t best = oy * g.kh * g.w + ox * g.kw;
  for (int64_t i = 0; i < g.kh; ++i)
    for (int64_t j = 0; j < g.kw; ++j) {
      const int64_t at = (oy * g.kh + i) * g.w + ox * g.kw + j;
      if (x[at] > x[best]) best = at;
    }
  return best;
}

}  // namespace

// params: x (N,C,H,W), kernel (2, int32: kh, kw) | y (N,C,H/kh,W/kw).
extern "C" int MaxPoolForward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                              void*, void*) {
  if (nparam != 3 || ndims[0] != 4 || ndims[2] != 4 || !ms_zoo::all_float32(dtypes, 0, 1)) return 1;
  const Geometry g = geometry(shapes, 0, 2, static_cast<const int32_t*>(params[1]));
  const float* x = static_cast<const float*>(params[0]);
  float* y = static_cast<float*>(params[2]);
  ms_zoo::parallel_for(g.planes, g.planes * g.h * g.w, [&](int64_t p) {
    const float* xp = x + p * g.h * g.w;
    float* yp = y + p * g.oh * g.ow;
    for (int64_t oy = 0; oy < g.oh; ++oy) {
      float* yr = yp + oy * g.ow;
      const float* first = xp + oy * g.kh * g.w;
      for (int64_t ox = 0; ox < g.ow; ++ox) yr[ox] = first[ox * g.kw];
      for (int64_t i = 0; i < g.kh; ++i) {
        const float* xr = first + i * g.w;
        for (int64_t j = 0; j < g.kw; ++j)
          for (int64_t ox = 0; ox < g.ow; ++ox) {
            const float v = xr[ox * g.kw + j];
            yr[ox] = v > yr[ox] ? v : yr[ox];
          }
      }
    }
  });
  return 0;
}

// params: x, dy, kernel | dx.
extern "C" int MaxPoolBackward(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes,
                               void*, void*) {
  if (nparam != 4 || ndims[0] != 4 || ndims[1] != 4 || !ms_zoo::all_float32(dtypes, 0, 2)) return 1;
  const Geometry g = geometry(shapes, 0, 1, static_cast<const int32_t*>(params[2]));
  const float* x = static_cast<const float*>(params[0]);
  const float* dy = static_cast<const float*>(params[1]);
  float* dx = static_cast<float*>(params[3]);
  ms_zoo::parallel_for(g.planes, g.planes * g.h * g.w, [&](int64_t p) {
    const float* xp = x + p * g.h * g.w;
    const float* dyp = dy + p * g.oh * g.ow;
    float* dxp = dx + p * g.h * g.w;
    std::memset(dxp, 0, sizeof(float) * g.h * g.w);
    for (int64_t oy = 0; oy < g.oh; ++oy)
      for (int64_t ox = 0; ox < g.ow; ++ox) dxp[argmax(g, xp, oy, ox)] = dyp[oy * g.ow + ox];
  });
  return 0;
}
