/**
 * preprocess_tool [--mean=r,g,b] [--std=r,g,b] [--image_channels=3|1] IMAGE HEIGHT WIDTH OUT.bin
 *
 * Writes the preprocessed (1, C, HEIGHT, WIDTH) float32 CHW tensor of IMAGE to OUT.bin, exactly
 * what the inference program feeds the model given the same flags (--mean/--std default to the
 * ImageNet statistics; CRNN uses --mean=127.5,127.5,127.5 --std=127.5,127.5,127.5). Depends on
 * the OpenCV-only preprocess library; used by tests/test_ascend310_preprocess.py to check
 * parity with the Python preprocessing.
 */
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "preprocess.h"

namespace {

void PrintUsage(const char *prog) {
  std::fprintf(stderr,
               "usage: %s [--mean=r,g,b] [--std=r,g,b] [--image_channels=3|1] IMAGE HEIGHT WIDTH OUT.bin\n"
               "  Writes the preprocessed image as raw float32, shape (1, C, HEIGHT, WIDTH), CHW.\n"
               "  --mean  per-channel RGB mean on the 0-255 scale (default 123.675,116.28,103.53)\n"
               "  --std   per-channel RGB std, each > 0 (default 58.395,57.12,57.375)\n"
               "  --image_channels  3 (RGB, default) or 1 (grey; uses the first mean and std)\n"
               "  Flags take the form --name=value or --name value.\n",
               prog);
}

bool ParsePositiveInt(const char *text, int *value) {
  if (text == nullptr || *text == '\0') return false;
  errno = 0;
  char *end = nullptr;
  const long v = std::strtol(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v <= 0 || v > INT_MAX) return false;
  *value = static_cast<int>(v);
  return true;
}

struct ToolArgs {
  std::vector<std::string> positional;
  ascend310_infer::ChannelStats mean = ascend310_infer::kImageNetMeanRGB;
  ascend310_infer::ChannelStats std_dev = ascend310_infer::kImageNetStdRGB;
  int channels = 3;
};

// Flags may appear anywhere; everything else is positional. Returns 0 on success, 1 for
// --help, -1 on error (already reported).
int ParseToolArgs(int argc, char **argv, ToolArgs *args) {
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "-h" || arg == "--help") return 1;
    if (arg.rfind("--", 0) != 0) {
      args->positional.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2);
    std::string value;
    const std::size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.erase(eq);
    } else if (name == "mean" || name == "std" || name == "image_channels") {
      // The separate-value form lets a negative mean ("--mean -1,0,0") through.
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: flag --%s needs a value\n", name.c_str());
        return -1;
      }
      value = argv[++i];
    }
    if (name == "mean") {
      if (!ascend310_infer::ParseChannelStats(value, false, &args->mean)) {
        std::fprintf(stderr, "error: --mean must be three finite numbers r,g,b, got '%s'\n", value.c_str());
        return -1;
      }
    } else if (name == "std") {
      if (!ascend310_infer::ParseChannelStats(value, true, &args->std_dev)) {
        std::fprintf(stderr, "error: --std must be three positive numbers r,g,b, got '%s'\n", value.c_str());
        return -1;
      }
    } else if (name == "image_channels") {
      if (!ascend310_infer::ParseImageChannels(value, &args->channels)) {
        std::fprintf(stderr, "error: --image_channels must be 1 or 3, got '%s'\n", value.c_str());
        return -1;
      }
    } else {
      std::fprintf(stderr, "error: unknown flag '%s'\n", arg.c_str());
      return -1;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char **argv) {
  ToolArgs args;
  const int parsed = ParseToolArgs(argc, argv, &args);
  if (parsed == 1) {
    PrintUsage(argv[0]);
    return 0;
  }
  if (parsed != 0 || args.positional.size() != 4) {
    PrintUsage(argv[0]);
    return 2;
  }
  const std::string &image = args.positional[0];
  int height = 0;
  int width = 0;
  if (!ParsePositiveInt(args.positional[1].c_str(), &height) || !ParsePositiveInt(args.positional[2].c_str(), &width)) {
    std::fprintf(stderr, "error: HEIGHT and WIDTH must be positive integers, got '%s' '%s'\n",
                 args.positional[1].c_str(), args.positional[2].c_str());
    PrintUsage(argv[0]);
    return 2;
  }
  const std::string &out = args.positional[3];

  std::vector<float> chw;
  int orig_h = 0;
  int orig_w = 0;
  if (!ascend310_infer::PreprocessImageFile(image, height, width, &chw, &orig_h, &orig_w, args.mean,
                                            args.std_dev, args.channels)) {
    std::fprintf(stderr, "error: cannot read or decode image '%s'\n", image.c_str());
    return 1;
  }
  if (!ascend310_infer::WriteFloatBin(out, chw)) {
    std::fprintf(stderr, "error: cannot write '%s'\n", out.c_str());
    return 1;
  }
  std::printf("%s: %dx%d -> (1, %d, %d, %d) float32 -> %s\n", image.c_str(), orig_h, orig_w, args.channels, height,
              width, out.c_str());
  return 0;
}
