/**
 * Image preprocessing for the Ascend 310 inference program.
 *
 * This part depends on OpenCV only (no MindSpore), so it can be built and tested on any
 * machine. It must stay numerically identical to the Python side, which is one pipeline with
 * per-model statistics:
 *
 *   BGR image (cv::imread, IMREAD_COLOR) -> RGB -> cv::resize to (width, height) with
 *   INTER_LINEAR (no aspect keeping) -> [grey models: RGB to one grey channel] -> float32 ->
 *   (x - mean) / std per channel -> HWC to CHW. The batch dimension (1) is implicit: the
 *   buffer holds channels * height * width floats.
 *
 * Which mean/std each model uses (the 0-255 scale, RGB order):
 *   SSD   `preprocess_for_inference` in src/data/transforms.py: ImageNet statistics, the
 *         defaults below (main's --mean/--std default to them too).
 *   CRNN  `preprocess_image` in src/crnn/model.py: mean = std = 127.5 on all three channels,
 *         which maps 0..255 to -1..1. With image_channels: 1 the resized RGB crop becomes one
 *         grey channel (cv::cvtColor RGB2GRAY, as cv2.cvtColor on the Python side), normalised
 *         with the first mean and std.
 */
#ifndef ASCEND310_INFER_INC_PREPROCESS_H_
#define ASCEND310_INFER_INC_PREPROCESS_H_

#include <array>
#include <cstddef>
#include <string>
#include <vector>

#include <opencv2/core.hpp>

namespace ascend310_infer {

// Per-channel statistics in RGB order, on the 0-255 scale.
using ChannelStats = std::array<float, 3>;

// ImageNet statistics (same values as IMAGENET_MEAN/STD in Python): the default, because the
// detection models were the first users and their scripts pass no --mean/--std.
constexpr ChannelStats kImageNetMeanRGB = {123.675f, 116.28f, 103.53f};
constexpr ChannelStats kImageNetStdRGB = {58.395f, 57.12f, 57.375f};

// Parses "r,g,b" (three decimal numbers, e.g. "127.5,127.5,127.5") into *values. Each number is
// read as a double and then rounded to float, the way numpy turns the Python floats of a
// config into float32, so both sides divide by bit-identical values. Returns false (leaving
// *values unchanged) unless there are exactly three finite numbers and, with
// require_positive, all three are > 0 after rounding (a std of 0 would divide by zero).
bool ParseChannelStats(const std::string &text, bool require_positive, ChannelStats *values);

// Parses an --image_channels value: "3" (RGB) or "1" (grey). Returns false (leaving *channels
// unchanged) for anything else.
bool ParseImageChannels(const std::string &text, int *channels);

// Reads an image file as an 8-bit, 3-channel RGB matrix. Returns false (and leaves *rgb empty)
// when the file is missing or cannot be decoded.
bool ReadImageRGB(const std::string &path, cv::Mat *rgb);

// Resizes an 8-bit 3-channel RGB image to height x width (bilinear, no aspect keeping) and
// normalises it, (x - mean_rgb[c]) / std_rgb[c], into a CHW float32 buffer of
// channels * height * width values written to *chw. channels is 3 (RGB) or 1 (grey, after
// the resize; normalised with mean_rgb[0] and std_rgb[0]). Returns false on invalid input
// (empty image, wrong type, non-positive size, channels other than 1 or 3, a std value that is
// not finite and > 0, a non-finite mean).
bool PreprocessRGB(const cv::Mat &rgb, int height, int width, std::vector<float> *chw,
                   const ChannelStats &mean_rgb = kImageNetMeanRGB,
                   const ChannelStats &std_rgb = kImageNetStdRGB, int channels = 3);

// ReadImageRGB + PreprocessRGB. *orig_height / *orig_width (optional) receive the size of
// the decoded image before resizing.
bool PreprocessImageFile(const std::string &path, int height, int width, std::vector<float> *chw,
                         int *orig_height = nullptr, int *orig_width = nullptr,
                         const ChannelStats &mean_rgb = kImageNetMeanRGB,
                         const ChannelStats &std_rgb = kImageNetStdRGB, int channels = 3);

// Writes `bytes` raw bytes to `path` (truncating it). Returns false on any I/O error.
bool WriteBinaryFile(const std::string &path, const void *data, std::size_t bytes);

// Writes a float buffer as raw native-endian (little-endian on x86/ARM) float32 values.
bool WriteFloatBin(const std::string &path, const std::vector<float> &values);

// True when the name ends in .jpg, .jpeg, .png or .bmp (case-insensitive).
bool HasImageExtension(const std::string &name);

// Regular files with an image extension directly inside `dir`, as full paths sorted by file
// name. Returns false when the directory cannot be opened.
bool ListImages(const std::string &dir, std::vector<std::string> *paths);

// File name without directory and without its last extension: "/a/b/000123.jpg" -> "000123".
std::string FileStem(const std::string &path);

// Joins a directory and a file name with exactly one '/'.
std::string JoinPath(const std::string &dir, const std::string &name);

// Creates `dir` and any missing parents (like mkdir -p). Returns true if it exists afterwards.
bool MakeDirs(const std::string &dir);

}  // namespace ascend310_infer

#endif  // ASCEND310_INFER_INC_PREPROCESS_H_
