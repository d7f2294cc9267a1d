// y = activation(x + bias[channel]) over NCHW float32 data, for inference on MindSpore's CPU
// backend, loaded as ``ops.Custom(..., func_type="aot")``.
//
// Why: after a convolution MindSpore runs BiasAdd and then ReLU/ReLU6 as two ops, two passes over
// the output. In SSD300-MobileNetV2 at batch 1 those passes were ~30% of the network's op time;
// this is one pass (and one op launch).
//
// Entry points (aot convention, MS_ZOO_AOT_ENTRY in common.h):
//   BiasRelu, BiasRelu6:  x (N, C, ...), bias (C) -> y (N, C, ...)
#include <cstdint>

#include "common.h"

namespace {

// params: x, bias, y. Activation: 1 ReLU, 6 ReLU6.
template <int Activation>
int bias_activation(int nparam, void** params, int* ndims, int64_t** shapes, const char** dtypes) {
  if (nparam != 3 || !ms_zoo::all_float32(dtypes, 0, 3) || ndims[0] < 2 || ndims[1] != 1 ||
      shapes[1][0] != shapes[0][1])
    return 1;
  int64_t plane = 1;
  for (int d = 2; d < ndims[0]; ++d) plane *= shapes[0][d];
  const int64_t channels = shapes[0][1], planes = shapes[0][0] * channels;
  const float* x = static_cast<const float*>(params[0]);
  const float* bias = static_cast<const float*>(params[1]);
  float* y = static_cast<float*>(params[2]);
  constexpr float high = ms_zoo::clamp_high(Activation);
  // One add and one clamp per float, vectorised and memory-bound: a second thread pays off only
  // from a few hundred thousand floats, not from parallel_for's default of 32k operations.
  ms_zoo::parallel_for(planes, planes * plane / 8, [&](int64_t p) {
    const float b = bias[p % channels];
    const float* xp = x + p * plane;
    float* yp = y + p * plane;
    for (int64_t i = 0; i < plane; ++i) yp[i] = ms_zoo::bias_clamp(xp[i], b, high);
  });
  return 0;
}

}  // namespace

MS_ZOO_AOT_ENTRY(BiasRelu, bias_activation<1>)
MS_ZOO_AOT_ENTRY(BiasRelu6, bias_activation<6>)
