/**
 * preprocess_tool IMAGE HEIGHT WIDTH OUT.bin
 *
 * Writes the preprocessed (1, 3, HEIGHT, WIDTH) float32 CHW tensor of IMAGE to OUT.bin, exactly
 * what the inference program feeds the model. Depends on the OpenCV-only preprocess library;
 * used by tests/test_ascend310_preprocess.py to check parity with the Python preprocessing.
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
               "usage: %s IMAGE HEIGHT WIDTH OUT.bin\n"
               "  Writes the preprocessed image as raw float32, shape (1, 3, HEIGHT, WIDTH), CHW.\n",
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

}  // namespace

int main(int argc, char **argv) {
  if (argc == 2 && (std::string(argv[1]) == "-h" || std::string(argv[1]) == "--help")) {
    PrintUsage(argv[0]);
    return 0;
  }
  if (argc != 5) {
    PrintUsage(argv[0]);
    return 2;
  }
  const std::string image = argv[1];
  int height = 0;
  int width = 0;
  if (!ParsePositiveInt(argv[2], &height) || !ParsePositiveInt(argv[3], &width)) {
    std::fprintf(stderr, "error: HEIGHT and WIDTH must be positive integers, got '%s' '%s'\n", argv[2],
                 argv[3]);
    PrintUsage(argv[0]);
    return 2;
  }
  const std::string out = argv[4];

  std::vector<float> chw;
  int orig_h = 0;
  int orig_w = 0;
  if (!ascend310_infer::PreprocessImageFile(image, height, width, &chw, &orig_h, &orig_w)) {
    std::fprintf(stderr, "error: cannot read or decode image '%s'\n", image.c_str());
    return 1;
  }
  if (!ascend310_infer::WriteFloatBin(out, chw)) {
    std::fprintf(stderr, "error: cannot write '%s'\n", out.c_str());
    return 1;
  }
  std::printf("%s: %dx%d -> (1, 3, %d, %d) float32 -> %s\n", image.c_str(), orig_h, orig_w, height, width,
              out.c_str());
  return 0;
}
