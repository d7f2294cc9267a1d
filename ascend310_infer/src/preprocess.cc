/**
 * OpenCV-only preprocessing; see inc/preprocess.h for the contract with the Python side.
 */
#include "preprocess.h"

#include <dirent.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdint>
#include <cstdlib>

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>

namespace ascend310_infer {

bool ReadImageRGB(const std::string &path, cv::Mat *rgb) {
  if (rgb == nullptr) return false;
  rgb->release();
  // IMREAD_COLOR: always 8-bit BGR with 3 channels (grey and alpha images are converted),
  // exactly what cv2.imread / cv2.imdecode(..., cv2.IMREAD_COLOR) give on the Python side.
  cv::Mat bgr = cv::imread(path, cv::IMREAD_COLOR);
  if (bgr.empty()) return false;
  cv::cvtColor(bgr, *rgb, cv::COLOR_BGR2RGB);
  return true;
}

bool ParseChannelStats(const std::string &text, bool require_positive, ChannelStats *values) {
  if (values == nullptr) return false;
  ChannelStats parsed{};
  std::size_t start = 0;
  for (std::size_t c = 0; c < parsed.size(); ++c) {
    const std::size_t comma = text.find(',', start);
    const bool last = c + 1 == parsed.size();
    // Exactly two commas: a missing number or a fourth one is an error, not silently ignored.
    if (last != (comma == std::string::npos)) return false;
    const std::string item = text.substr(start, last ? std::string::npos : comma - start);
    if (item.empty() || std::isspace(static_cast<unsigned char>(item.front()))) return false;
    errno = 0;
    char *end = nullptr;
    const double v = std::strtod(item.c_str(), &end);
    if (errno != 0 || end == item.c_str() || *end != '\0' || !std::isfinite(v)) return false;
    parsed[c] = static_cast<float>(v);
    if (!std::isfinite(parsed[c])) return false;  // finite double beyond float range
    if (require_positive && !(parsed[c] > 0.0f)) return false;
    start = comma + 1;
  }
  *values = parsed;
  return true;
}

bool ParseImageChannels(const std::string &text, int *channels) {
  if (channels == nullptr || (text != "1" && text != "3")) return false;
  *channels = text == "1" ? 1 : 3;
  return true;
}

bool PreprocessRGB(const cv::Mat &rgb, int height, int width, std::vector<float> *chw,
                   const ChannelStats &mean_rgb, const ChannelStats &std_rgb, int channels) {
  if (chw == nullptr || rgb.empty() || rgb.type() != CV_8UC3 || height <= 0 || width <= 0 ||
      (channels != 1 && channels != 3)) {
    return false;
  }
  for (std::size_t c = 0; c < 3; ++c) {
    // Library callers bypass the flag parsing, so a zero/NaN std is refused here as well.
    if (!std::isfinite(mean_rgb[c]) || !std::isfinite(std_rgb[c]) || !(std_rgb[c] > 0.0f)) return false;
  }
  cv::Mat resized;
  // cv::Size is (width, height), as in cv2.resize(img, (w, h)).
  cv::resize(rgb, resized, cv::Size(width, height), 0.0, 0.0, cv::INTER_LINEAR);

  const std::size_t plane = static_cast<std::size_t>(height) * static_cast<std::size_t>(width);
  if (channels == 1) {
    cv::Mat grey;
    cv::cvtColor(resized, grey, cv::COLOR_RGB2GRAY);
    chw->assign(plane, 0.0f);
    for (int y = 0; y < height; ++y) {
      const std::uint8_t *row = grey.ptr<std::uint8_t>(y);
      float *out = chw->data() + static_cast<std::size_t>(y) * static_cast<std::size_t>(width);
      for (int x = 0; x < width; ++x) out[x] = (static_cast<float>(row[x]) - mean_rgb[0]) / std_rgb[0];
    }
    return true;
  }
  chw->assign(3 * plane, 0.0f);
  float *r = chw->data();
  float *g = r + plane;
  float *b = g + plane;
  for (int y = 0; y < height; ++y) {
    const std::uint8_t *row = resized.ptr<std::uint8_t>(y);
    const std::size_t base = static_cast<std::size_t>(y) * static_cast<std::size_t>(width);
    for (int x = 0; x < width; ++x) {
      const std::uint8_t *px = row + 3 * x;
      // Same float32 operations, in the same order, as numpy: (x - mean) then / std. A division,
      // not a multiplication by 1/std, which would round differently.
      r[base + x] = (static_cast<float>(px[0]) - mean_rgb[0]) / std_rgb[0];
      g[base + x] = (static_cast<float>(px[1]) - mean_rgb[1]) / std_rgb[1];
      b[base + x] = (static_cast<float>(px[2]) - mean_rgb[2]) / std_rgb[2];
    }
  }
  return true;
}

bool PreprocessImageFile(const std::string &path, int height, int width, std::vector<float> *chw,
                         int *orig_height, int *orig_width, const ChannelStats &mean_rgb,
                         const ChannelStats &std_rgb, int channels) {
  cv::Mat rgb;
  if (!ReadImageRGB(path, &rgb)) return false;
  if (orig_height != nullptr) *orig_height = rgb.rows;
  if (orig_width != nullptr) *orig_width = rgb.cols;
  return PreprocessRGB(rgb, height, width, chw, mean_rgb, std_rgb, channels);
}

bool WriteBinaryFile(const std::string &path, const void *data, std::size_t bytes) {
  std::FILE *f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) return false;
  bool ok = true;
  if (bytes > 0) {
    ok = data != nullptr && std::fwrite(data, 1, bytes, f) == bytes;
  }
  ok = (std::fclose(f) == 0) && ok;
  return ok;
}

bool WriteFloatBin(const std::string &path, const std::vector<float> &values) {
  return WriteBinaryFile(path, values.data(), values.size() * sizeof(float));
}

bool HasImageExtension(const std::string &name) {
  const std::size_t dot = name.find_last_of('.');
  if (dot == std::string::npos) return false;
  std::string ext = name.substr(dot + 1);
  std::transform(ext.begin(), ext.end(), ext.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return ext == "jpg" || ext == "jpeg" || ext == "png" || ext == "bmp";
}

std::string JoinPath(const std::string &dir, const std::string &name) {
  if (dir.empty()) return name;
  if (dir.back() == '/') return dir + name;
  return dir + "/" + name;
}

bool ListImages(const std::string &dir, std::vector<std::string> *paths) {
  if (paths == nullptr) return false;
  paths->clear();
  DIR *d = opendir(dir.c_str());
  if (d == nullptr) return false;
  std::vector<std::string> names;
  for (struct dirent *e = readdir(d); e != nullptr; e = readdir(d)) {
    const std::string name = e->d_name;
    if (name.empty() || name[0] == '.' || !HasImageExtension(name)) continue;
    struct stat st;
    if (stat(JoinPath(dir, name).c_str(), &st) != 0 || !S_ISREG(st.st_mode)) continue;
    names.push_back(name);
  }
  closedir(d);
  std::sort(names.begin(), names.end());
  for (const std::string &name : names) paths->push_back(JoinPath(dir, name));
  return true;
}

std::string FileStem(const std::string &path) {
  const std::size_t slash = path.find_last_of('/');
  std::string name = (slash == std::string::npos) ? path : path.substr(slash + 1);
  const std::size_t dot = name.find_last_of('.');
  if (dot != std::string::npos && dot > 0) name.erase(dot);
  return name;
}

bool MakeDirs(const std::string &dir) {
  if (dir.empty()) return false;
  std::string partial;
  std::size_t pos = 0;
  while (pos != std::string::npos) {
    pos = dir.find('/', pos + 1);
    partial = dir.substr(0, pos);
    if (partial.empty()) continue;
    if (mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST) return false;
  }
  struct stat st;
  return stat(dir.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

}  // namespace ascend310_infer
