/**
 * Ascend 310 inference for an exported MINDIR with one RGB image input (SSD detection, CRNN
 * text recognition).
 *
 *   main --mindir_path=FILE --dataset_path=DIR [--device_id=0] [--image_height=300]
 *        [--image_width=300] [--image_channels=3] [--mean=r,g,b] [--std=r,g,b]
 *        [--output_dir=./result_Files]
 *
 * For every image in DIR (.jpg/.jpeg/.png/.bmp, sorted by file name) the image is preprocessed
 * like the Python side (see preprocess.h): resized to H x W, then (x - mean) / std per RGB
 * channel. --mean/--std default to the ImageNet statistics that SSD uses
 * (src/data/transforms.py:preprocess_for_inference); CRNN (src/crnn/model.py:preprocess_image)
 * needs --image_height=32 --image_width=100 --mean=127.5,127.5,127.5 --std=127.5,127.5,127.5,
 * and --image_channels=1 when it was trained on grey input (image_channels: 1).
 * Nothing in the MINDIR says which statistics it was trained with, so a wrong pair is not
 * detected here: it only shows as poor accuracy in postprocess.py.
 *
 * The image goes to the model as one (1, C, H, W) float32 batch, and each model output i is
 * written to OUTPUT_DIR/<image stem>_<i>.bin as raw row-major float32. postprocess.py reads
 * those files and recovers the original image sizes from the images themselves.
 */
#include <chrono>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "include/api/context.h"
#include "include/api/model.h"
#include "include/api/serialization.h"
#include "include/api/types.h"
#include "preprocess.h"

namespace {

using mindspore::DataType;
using mindspore::MSTensor;

struct Options {
  std::string mindir_path;
  std::string dataset_path;
  std::string output_dir = "./result_Files";
  int device_id = 0;
  int image_height = 300;
  int image_width = 300;
  int image_channels = 3;
  ascend310_infer::ChannelStats mean = ascend310_infer::kImageNetMeanRGB;
  ascend310_infer::ChannelStats std_dev = ascend310_infer::kImageNetStdRGB;
};

void PrintUsage(const char *prog) {
  std::fprintf(stderr,
               "usage: %s --mindir_path=FILE --dataset_path=DIR [--device_id=N] [--image_height=H]\n"
               "          [--image_width=W] [--image_channels=C] [--mean=R,G,B] [--std=R,G,B] [--output_dir=DIR]\n"
               "  --mindir_path   exported MINDIR file (required)\n"
               "  --dataset_path  directory of .jpg/.jpeg/.png/.bmp images (required)\n"
               "  --device_id     Ascend device id (default 0)\n"
               "  --image_height  network input height (default 300)\n"
               "  --image_width   network input width (default 300)\n"
               "  --image_channels 3 (RGB, default) or 1 (grey CRNN; uses the first mean and std)\n"
               "  --mean          per-channel RGB mean on the 0-255 scale\n"
               "                  (default ImageNet 123.675,116.28,103.53; CRNN: 127.5,127.5,127.5)\n"
               "  --std           per-channel RGB std, each > 0\n"
               "                  (default ImageNet 58.395,57.12,57.375; CRNN: 127.5,127.5,127.5)\n"
               "  --output_dir    where <image stem>_<i>.bin files go (default ./result_Files)\n"
               "  Flags take the form --name=value or --name value.\n",
               prog);
}

bool ParseInt(const std::string &text, int min_value, int *value) {
  if (text.empty()) return false;
  errno = 0;
  char *end = nullptr;
  const long v = std::strtol(text.c_str(), &end, 10);
  if (errno != 0 || *end != '\0' || v < min_value || v > INT_MAX) return false;
  *value = static_cast<int>(v);
  return true;
}

// Tiny argv parser (no gflags dependency). Returns 0 on success, 1 for --help, -1 on error.
int ParseArgs(int argc, char **argv, Options *opt) {
  std::map<std::string, std::string> values;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") return 1;
    if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
      std::fprintf(stderr, "error: unexpected argument '%s'\n", arg.c_str());
      return -1;
    }
    arg = arg.substr(2);
    std::string name;
    std::string value;
    const std::size_t eq = arg.find('=');
    if (eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
    } else {
      name = arg;
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: flag --%s needs a value\n", name.c_str());
        return -1;
      }
      value = argv[++i];
    }
    values[name] = value;
  }
  for (const auto &kv : values) {
    const std::string &name = kv.first;
    const std::string &value = kv.second;
    if (name == "mindir_path") {
      opt->mindir_path = value;
    } else if (name == "dataset_path") {
      opt->dataset_path = value;
    } else if (name == "output_dir") {
      opt->output_dir = value;
    } else if (name == "device_id") {
      if (!ParseInt(value, 0, &opt->device_id)) {
        std::fprintf(stderr, "error: --device_id must be a non-negative integer, got '%s'\n", value.c_str());
        return -1;
      }
    } else if (name == "image_height") {
      if (!ParseInt(value, 1, &opt->image_height)) {
        std::fprintf(stderr, "error: --image_height must be a positive integer, got '%s'\n", value.c_str());
        return -1;
      }
    } else if (name == "image_width") {
      if (!ParseInt(value, 1, &opt->image_width)) {
        std::fprintf(stderr, "error: --image_width must be a positive integer, got '%s'\n", value.c_str());
        return -1;
      }
    } else if (name == "image_channels") {
      if (!ascend310_infer::ParseImageChannels(value, &opt->image_channels)) {
        std::fprintf(stderr, "error: --image_channels must be 1 or 3, got '%s'\n", value.c_str());
        return -1;
      }
    } else if (name == "mean") {
      if (!ascend310_infer::ParseChannelStats(value, false, &opt->mean)) {
        std::fprintf(stderr, "error: --mean must be three finite numbers r,g,b (e.g. 127.5,127.5,127.5), got '%s'\n",
                     value.c_str());
        return -1;
      }
    } else if (name == "std") {
      if (!ascend310_infer::ParseChannelStats(value, true, &opt->std_dev)) {
        std::fprintf(stderr, "error: --std must be three positive numbers r,g,b (e.g. 127.5,127.5,127.5), got '%s'\n",
                     value.c_str());
        return -1;
      }
    } else {
      std::fprintf(stderr, "error: unknown flag --%s\n", name.c_str());
      return -1;
    }
  }
  if (opt->mindir_path.empty() || opt->dataset_path.empty()) {
    std::fprintf(stderr, "error: --mindir_path and --dataset_path are required\n");
    return -1;
  }
  if (opt->output_dir.empty()) {
    std::fprintf(stderr, "error: --output_dir must not be empty\n");
    return -1;
  }
  return 0;
}

std::string ShapeToString(const std::vector<int64_t> &shape) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(shape[i]);
  }
  if (shape.size() == 1) s += ",";
  return s + ")";
}

float HalfToFloat(uint16_t h) {
  const uint32_t sign = (h >> 15) & 0x1u;
  const uint32_t exponent = (h >> 10) & 0x1Fu;
  const uint32_t mantissa = h & 0x3FFu;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // zero or subnormal
  } else if (exponent == 31) {
    magnitude = mantissa == 0 ? INFINITY : NAN;
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400u), static_cast<int>(exponent) - 25);
  }
  return sign ? -magnitude : magnitude;
}

template <typename T>
void CastToFloat(const void *src, std::size_t count, std::vector<float> *dst) {
  const T *p = static_cast<const T *>(src);
  dst->resize(count);
  for (std::size_t i = 0; i < count; ++i) (*dst)[i] = static_cast<float>(p[i]);
}

// Writes one output tensor as raw float32. float32 tensors are written byte for byte; other
// numeric types are converted so that postprocess.py can always read float32.
bool WriteOutputAsFloat32(const MSTensor &tensor, const std::string &path) {
  const std::shared_ptr<const void> data = tensor.Data();
  const std::size_t bytes = tensor.DataSize();
  const std::size_t count = static_cast<std::size_t>(tensor.ElementNum());
  if (count > 0 && data == nullptr) return false;
  const DataType type = tensor.DataType();
  if (type == DataType::kNumberTypeFloat32) {
    return ascend310_infer::WriteBinaryFile(path, data.get(), bytes);
  }
  std::vector<float> converted;
  switch (type) {
    case DataType::kNumberTypeFloat16: {
      const uint16_t *p = static_cast<const uint16_t *>(data.get());
      converted.resize(count);
      for (std::size_t i = 0; i < count; ++i) converted[i] = HalfToFloat(p[i]);
      break;
    }
    case DataType::kNumberTypeFloat64:
      CastToFloat<double>(data.get(), count, &converted);
      break;
    case DataType::kNumberTypeInt32:
      CastToFloat<int32_t>(data.get(), count, &converted);
      break;
    case DataType::kNumberTypeInt64:
      CastToFloat<int64_t>(data.get(), count, &converted);
      break;
    case DataType::kNumberTypeInt8:
      CastToFloat<int8_t>(data.get(), count, &converted);
      break;
    case DataType::kNumberTypeUInt8:
    case DataType::kNumberTypeBool:
      CastToFloat<uint8_t>(data.get(), count, &converted);
      break;
    default:
      std::fprintf(stderr, "error: output data type %d is not supported\n", static_cast<int>(type));
      return false;
  }
  return ascend310_infer::WriteFloatBin(path, converted);
}

}  // namespace

int main(int argc, char **argv) {
  Options opt;
  const int parsed = ParseArgs(argc, argv, &opt);
  if (parsed == 1) {
    PrintUsage(argv[0]);
    return 0;
  }
  if (parsed != 0) {
    PrintUsage(argv[0]);
    return 2;
  }

  std::vector<std::string> images;
  if (!ascend310_infer::ListImages(opt.dataset_path, &images)) {
    std::fprintf(stderr, "error: cannot open dataset directory '%s'\n", opt.dataset_path.c_str());
    return 1;
  }
  if (images.empty()) {
    std::fprintf(stderr, "error: no .jpg/.jpeg/.png/.bmp images in '%s'\n", opt.dataset_path.c_str());
    return 1;
  }
  if (!ascend310_infer::MakeDirs(opt.output_dir)) {
    std::fprintf(stderr, "error: cannot create output directory '%s'\n", opt.output_dir.c_str());
    return 1;
  }

  auto context = std::make_shared<mindspore::Context>();
  // Ascend310DeviceInfo is an alias of AscendDeviceInfo in MindSpore >= 1.8, and the only name
  // in older releases, so it compiles against both.
  auto ascend = std::make_shared<mindspore::Ascend310DeviceInfo>();
  ascend->SetDeviceID(static_cast<uint32_t>(opt.device_id));
  context->MutableDeviceInfo().push_back(ascend);

  mindspore::Graph graph;
  mindspore::Status ret = mindspore::Serialization::Load(opt.mindir_path, mindspore::ModelType::kMindIR, &graph);
  if (ret != mindspore::kSuccess) {
    std::fprintf(stderr, "error: cannot load MINDIR '%s': %s\n", opt.mindir_path.c_str(), ret.ToString().c_str());
    return 1;
  }
  mindspore::Model model;
  ret = model.Build(mindspore::GraphCell(graph), context);
  if (ret != mindspore::kSuccess) {
    std::fprintf(stderr, "error: model build failed on device %d: %s\n", opt.device_id, ret.ToString().c_str());
    return 1;
  }

  const std::vector<MSTensor> model_inputs = model.GetInputs();
  if (model_inputs.size() != 1) {
    std::fprintf(stderr, "error: the model has %zu inputs; this program feeds exactly one image tensor\n",
                 model_inputs.size());
    return 1;
  }
  const MSTensor &input_info = model_inputs[0];
  if (input_info.DataType() != DataType::kNumberTypeFloat32) {
    std::fprintf(stderr, "error: model input '%s' has data type %d; a float32 input is required\n",
                 input_info.Name().c_str(), static_cast<int>(input_info.DataType()));
    return 1;
  }
  const std::vector<int64_t> expected_shape = {1, opt.image_channels, opt.image_height, opt.image_width};
  std::vector<int64_t> input_shape = input_info.Shape();
  // Checked before the dynamic-shape fallback below, with its own message: a known channel
  // count that differs (a grey CRNN fed RGB, or the reverse) is a wrong --image_channels.
  if (input_shape.size() == 4 && input_shape[1] >= 0 && input_shape[1] != opt.image_channels) {
    std::fprintf(stderr, "error: model input shape %s has %lld channels but --image_channels is %d\n",
                 ShapeToString(input_shape).c_str(), static_cast<long long>(input_shape[1]), opt.image_channels);
    return 1;
  }
  bool dynamic = input_shape.size() != expected_shape.size();
  for (int64_t d : input_shape) dynamic = dynamic || d < 0;
  if (dynamic) {
    input_shape = expected_shape;  // unknown/dynamic shape: feed (1, C, H, W)
  } else if (input_shape != expected_shape) {
    std::fprintf(stderr, "error: model input shape %s does not match %s; check --image_height/--image_width\n",
                 ShapeToString(input_shape).c_str(), ShapeToString(expected_shape).c_str());
    return 1;
  }
  std::printf("model %s: input '%s' %s float32, %zu images, device %d\n", opt.mindir_path.c_str(),
              input_info.Name().c_str(), ShapeToString(input_shape).c_str(), images.size(), opt.device_id);
  if (opt.image_channels == 1) {
    std::printf("normalisation: grey, mean %g std %g (0-255 scale)\n", opt.mean[0], opt.std_dev[0]);
  } else {
    std::printf("normalisation: mean %g,%g,%g std %g,%g,%g (RGB, 0-255 scale)\n", opt.mean[0], opt.mean[1],
                opt.mean[2], opt.std_dev[0], opt.std_dev[1], opt.std_dev[2]);
  }

  double total_ms = 0.0;
  std::size_t done = 0;
  std::vector<float> chw;
  for (const std::string &image : images) {
    int orig_h = 0;
    int orig_w = 0;
    if (!ascend310_infer::PreprocessImageFile(image, opt.image_height, opt.image_width, &chw, &orig_h, &orig_w,
                                              opt.mean, opt.std_dev, opt.image_channels)) {
      std::fprintf(stderr, "error: cannot read or decode image '%s'\n", image.c_str());
      return 1;
    }
    std::vector<MSTensor> inputs;
    inputs.emplace_back(input_info.Name(), DataType::kNumberTypeFloat32, input_shape, chw.data(),
                        chw.size() * sizeof(float));
    std::vector<MSTensor> outputs;
    const auto start = std::chrono::steady_clock::now();
    ret = model.Predict(inputs, &outputs);
    const auto end = std::chrono::steady_clock::now();
    if (ret != mindspore::kSuccess) {
      std::fprintf(stderr, "error: predict failed for '%s': %s\n", image.c_str(), ret.ToString().c_str());
      return 1;
    }
    const double ms = std::chrono::duration<double, std::milli>(end - start).count();
    total_ms += ms;
    ++done;

    const std::string stem = ascend310_infer::FileStem(image);
    for (std::size_t i = 0; i < outputs.size(); ++i) {
      const std::string out_path = ascend310_infer::JoinPath(opt.output_dir, stem + "_" + std::to_string(i) + ".bin");
      if (!WriteOutputAsFloat32(outputs[i], out_path)) {
        std::fprintf(stderr, "error: cannot write output %zu of '%s' to '%s'\n", i, image.c_str(), out_path.c_str());
        return 1;
      }
    }
    std::printf("[%zu/%zu] %s (%dx%d): %zu outputs, inference time %.3f ms\n", done, images.size(), image.c_str(),
                orig_h, orig_w, outputs.size(), ms);
  }
  std::printf("average inference time: %.3f ms over %zu images (%.2f images/s)\n", total_ms / done, done,
              total_ms > 0.0 ? 1000.0 * done / total_ms : 0.0);
  std::printf("outputs written to %s\n", opt.output_dir.c_str());
  return 0;
}
