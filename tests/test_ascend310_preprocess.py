"""Parity of the Ascend 310 C++ preprocessing (ascend310_infer/) with the Python one.

Builds the OpenCV-only part of ascend310_infer (``preprocess`` + ``preprocess_tool``, CMake
option PREPROCESS_ONLY=ON) into a temporary directory once per module, runs ``preprocess_tool``
on images written here, and compares with the Python preprocessing of each model:
``src.data.transforms.preprocess_for_inference`` (SSD, the default ImageNet statistics) and
``src.crnn.model.preprocess_image`` (CRNN: 32x100, ``--mean``/``--std`` 127.5).

It also compiles ``src/main.cc`` against a tiny *stub* of the MindSpore C++ API (written below;
no MindSpore code) so that the inference program's argument parsing, image listing and
``<stem>_<i>.bin`` output layout are exercised on machines without an Ascend toolkit. The stub
mirrors only the signatures main.cc uses; the real API is checked on a 310 host.

Skipped (with the reason) when g++, cmake or the OpenCV development files are missing:
``apt-get install g++ cmake pkg-config libopencv-dev``.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

cv2 = pytest.importorskip("cv2")
from src.data.transforms import preprocess_for_inference  # noqa: E402

INFER_DIR = REPO_ROOT / "ascend310_infer"
TOL = 1e-3


def _missing_toolchain() -> str | None:
    if shutil.which("g++") is None:
        return "no C++ compiler (g++) found; install g++ to build ascend310_infer"
    if shutil.which("cmake") is None:
        return "cmake not found; install cmake to build ascend310_infer"
    if shutil.which("pkg-config") is None:
        return "pkg-config not found; cannot check for OpenCV dev files (apt-get install pkg-config)"
    if subprocess.run(["pkg-config", "--exists", "opencv4"]).returncode != 0:
        return "OpenCV development files not found (pkg-config opencv4); apt-get install libopencv-dev"
    return None


_SKIP_REASON = _missing_toolchain()
pytestmark = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=300, **kw)


def _check(proc: subprocess.CompletedProcess, what: str) -> None:
    assert proc.returncode == 0, f"{what} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def preprocess_tool(tmp_path_factory) -> Path:
    """Build the OpenCV-only part once per module; returns the preprocess_tool binary."""
    build = tmp_path_factory.mktemp("a310_build")
    _check(_run(["cmake", "-S", INFER_DIR, "-B", build, "-DPREPROCESS_ONLY=ON",
                 "-DCMAKE_BUILD_TYPE=Release"]), "cmake configure")
    _check(_run(["cmake", "--build", build, "--target", "preprocess_tool", "-j", "2"]), "cmake build")
    tool = build / "preprocess_tool"
    assert tool.is_file()
    return tool


def _python_reference(path: Path, height: int, width: int) -> np.ndarray:
    """What the Python side does: cv2 BGR read -> RGB -> preprocess_for_inference."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert bgr is not None, path
    return preprocess_for_inference(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (height, width))


def _cpp(tool: Path, image: Path, height: int, width: int, out: Path, flags: tuple = (),
         channels: int = 3) -> np.ndarray:
    _check(_run([tool, *flags, image, height, width, out]), "preprocess_tool")
    data = np.fromfile(out, dtype=np.float32)
    assert data.size == channels * height * width, "the .bin must hold exactly C*H*W float32 values"
    return data.reshape(1, channels, height, width)


def _make_images(d: Path) -> dict[str, Path]:
    rng = np.random.default_rng(20240531)
    noise = rng.integers(0, 256, size=(333, 517, 3), dtype=np.uint8)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, size=(121, 95, 3), dtype=np.uint8), (7, 7), 0)
    grey = cv2.GaussianBlur(rng.integers(0, 256, size=(257, 203), dtype=np.uint8), (5, 5), 0)
    images = {
        "noise_jpg": d / "noise.jpg",
        "noise_png": d / "noise.png",       # the same pixels losslessly: decode-independent
        "small_png": d / "small.png",       # smaller than the target: upsampling path
        "grey3_jpg": d / "grey3.jpg",       # grey content stored as 3 channels
        "grey3_png": d / "grey3.png",
        "bmp": d / "smooth.bmp",
    }
    assert cv2.imwrite(str(images["noise_jpg"]), noise, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert cv2.imwrite(str(images["noise_png"]), noise)
    assert cv2.imwrite(str(images["small_png"]), smooth)
    grey3 = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    assert cv2.imwrite(str(images["grey3_jpg"]), grey3)
    assert cv2.imwrite(str(images["grey3_png"]), grey3)
    assert cv2.imwrite(str(images["bmp"]), smooth)
    return images


@pytest.mark.parametrize("height,width", [(300, 300), (320, 480), (512, 640)])
def test_preprocess_matches_python(preprocess_tool, tmp_path, height, width):
    images = _make_images(tmp_path)
    for name, path in images.items():
        cpp = _cpp(preprocess_tool, path, height, width, tmp_path / f"{name}.bin")
        ref = _python_reference(path, height, width)
        assert ref.shape == cpp.shape == (1, 3, height, width)
        diff = float(np.abs(cpp - ref).max())
        # JPEG files are compared as decoded by each side (the system OpenCV used by the C++
        # build vs opencv-python's bundled libjpeg). Measured here: bit-identical (0.0). If a
        # JPEG decoder difference ever shows up, the *_png cases (same pixels, lossless) still
        # pin the resize + normalisation; only the JPEG cases would need a looser bound.
        assert diff <= TOL, f"{name} {height}x{width}: max |C++ - Python| = {diff}"


CRNN_FLAGS = ("--mean=127.5,127.5,127.5", "--std=127.5,127.5,127.5")
IMAGENET_FLAGS = ("--mean=123.675,116.28,103.53", "--std", "58.395,57.12,57.375")  # both flag forms


@pytest.fixture(scope="module")
def crnn_cfg():
    """configs/crnn/crnn.yaml as the entry points load it (img_shape 32x100, 3 channels)."""
    from src.model_utils.config import parse_cli
    cfg = parse_cli(["--config_path", str(REPO_ROOT / "configs" / "crnn" / "crnn.yaml")])
    assert list(cfg.img_shape) == [32, 100] and cfg.image_channels == 3
    return cfg


def _word_crops(d: Path) -> dict[str, Path]:
    """Word-crop-like pictures: wider and narrower than 100, taller and shorter than 32."""
    rng = np.random.default_rng(20240601)
    sizes = {"wide": (31, 187), "tall": (64, 48), "tiny": (9, 23), "exact": (32, 100), "long": (40, 517)}
    images = {}
    for i, (name, (h, w)) in enumerate(sizes.items()):
        img = cv2.GaussianBlur(rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8), (3, 3), 0)
        ext = ".jpg" if i % 2 else ".png"
        images[name] = d / f"{name}{ext}"
        assert cv2.imwrite(str(images[name]), img)
    return images


def test_crnn_preprocess_matches_python(preprocess_tool, crnn_cfg, tmp_path):
    """The 310 program with the CRNN flags feeds exactly what CRNN's Python side computes."""
    from src.crnn.model import preprocess_image
    for name, path in _word_crops(tmp_path).items():
        cpp = _cpp(preprocess_tool, path, 32, 100, tmp_path / f"{name}.bin", CRNN_FLAGS)
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        ref = preprocess_image(crnn_cfg, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        assert ref.shape == cpp.shape == (1, 3, 32, 100) and ref.dtype == np.float32
        diff = float(np.abs(cpp - ref).max())
        assert diff <= 1e-6, f"{name}: max |C++ - Python| = {diff}"
        assert -1.0 <= cpp.min() and cpp.max() <= 1.0


def test_grey_crnn_preprocess_matches_python(preprocess_tool, tmp_path):
    """--image_channels=1 feeds what a grey CRNN's Python side computes (configs/crnn/crnn_words.yaml)."""
    from src.crnn.model import preprocess_image
    from src.model_utils.config import parse_cli
    cfg = parse_cli(["--config_path", str(REPO_ROOT / "configs" / "crnn" / "crnn.yaml"), "--image_channels", "1"])
    for name, path in _word_crops(tmp_path).items():
        cpp = _cpp(preprocess_tool, path, 32, 100, tmp_path / f"{name}.bin", CRNN_FLAGS + ("--image_channels=1",),
                   channels=1)
        ref = preprocess_image(cfg, cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB))
        assert ref.shape == cpp.shape == (1, 1, 32, 100)
        diff = float(np.abs(cpp - ref).max())
        assert diff <= 1e-6, f"{name}: max |C++ - Python| = {diff}"
        assert cpp.std() > 0.05  # a real picture, not a constant
    bad = _run([preprocess_tool, "--image_channels=2", path, 32, 100, tmp_path / "x.bin"])
    assert bad.returncode == 2 and "--image_channels must be 1 or 3" in bad.stderr


def test_ssd_preprocess_still_matches_with_explicit_flags(preprocess_tool, tmp_path):
    """Spelling out the ImageNet statistics changes nothing: same bits as the defaults and
    as preprocess_for_inference."""
    images = _make_images(tmp_path)
    images.update(_word_crops(tmp_path))
    for name, path in images.items():
        default = _cpp(preprocess_tool, path, 300, 300, tmp_path / f"{name}_d.bin")
        explicit = _cpp(preprocess_tool, path, 300, 300, tmp_path / f"{name}_e.bin", IMAGENET_FLAGS)
        np.testing.assert_array_equal(explicit, default)
        diff = float(np.abs(explicit - _python_reference(path, 300, 300)).max())
        assert diff <= 1e-6, f"{name}: max |C++ - Python| = {diff}"


def test_per_channel_stats_are_applied_in_rgb_order(preprocess_tool, tmp_path):
    """Distinct statistics per channel land on the right plane (a swapped r/b would pass the
    CRNN case, whose three channels share one value)."""
    img = np.zeros((8, 8, 3), np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 30, 20, 10  # BGR: R=10, G=20, B=30
    path = tmp_path / "flat.png"
    assert cv2.imwrite(str(path), img)
    out = _cpp(preprocess_tool, path, 4, 4, tmp_path / "flat.bin", ("--mean", "-1,2,3.5", "--std=2,4,0.5"))[0]
    np.testing.assert_allclose(out[0], (10 + 1) / 2, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[1], (20 - 2) / 4, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out[2], (30 - 3.5) / 0.5, rtol=0, atol=1e-6)


@pytest.mark.parametrize("flag", ["--mean=1,2", "--mean=1,2,3,4", "--mean=a,b,c", "--mean=1,,3", "--mean=",
                                  "--mean=nan,0,0", "--mean=1e999,0,0", "--mean= 1,2,3", "--std=1,0,1",
                                  "--std=-1,1,1", "--std=1,1,1e-50", "--std=inf,1,1", "--std=1;1;1"])
def test_preprocess_tool_rejects_bad_stats(preprocess_tool, tmp_path, flag):
    img = tmp_path / "ok.png"
    cv2.imwrite(str(img), np.zeros((5, 5, 3), np.uint8))
    bad = _run([preprocess_tool, flag, img, 32, 100, tmp_path / "x.bin"])
    assert bad.returncode == 2
    name = flag.split("=")[0]
    assert f"error: {name} must be three" in bad.stderr, bad.stderr
    assert not (tmp_path / "x.bin").exists()


def test_grey_image_channels_equal(preprocess_tool, tmp_path):
    """A grey picture stored as 3 channels stays grey: R, G, B planes share the pixel values."""
    images = _make_images(tmp_path)
    out = _cpp(preprocess_tool, images["grey3_png"], 300, 300, tmp_path / "g.bin")[0]
    mean = np.array([123.675, 116.28, 103.53], np.float32)[:, None, None]
    std = np.array([58.395, 57.12, 57.375], np.float32)[:, None, None]
    pixels = out * std + mean
    np.testing.assert_allclose(pixels[0], pixels[1], atol=1e-3)
    np.testing.assert_allclose(pixels[0], pixels[2], atol=1e-3)


def test_channel_order_is_rgb(preprocess_tool, tmp_path):
    """A pure-blue BGR image must end up in the last (B) plane of the CHW tensor."""
    blue = np.zeros((40, 60, 3), np.uint8)
    blue[..., 0] = 255  # BGR: blue
    path = tmp_path / "blue.png"
    assert cv2.imwrite(str(path), blue)
    out = _cpp(preprocess_tool, path, 30, 20, tmp_path / "blue.bin")[0]
    np.testing.assert_allclose(out[0], (0 - 123.675) / 58.395, atol=1e-5)
    np.testing.assert_allclose(out[1], (0 - 116.28) / 57.12, atol=1e-5)
    np.testing.assert_allclose(out[2], (255 - 103.53) / 57.375, atol=1e-5)


def test_preprocess_tool_errors(preprocess_tool, tmp_path):
    assert _run([preprocess_tool]).returncode != 0
    assert "usage" in _run([preprocess_tool]).stderr
    bad = _run([preprocess_tool, tmp_path / "missing.jpg", 300, 300, tmp_path / "x.bin"])
    assert bad.returncode != 0 and "cannot read" in bad.stderr
    not_image = tmp_path / "text.jpg"
    not_image.write_text("not an image")
    assert _run([preprocess_tool, not_image, 300, 300, tmp_path / "x.bin"]).returncode != 0
    img = tmp_path / "ok.png"
    cv2.imwrite(str(img), np.zeros((5, 5, 3), np.uint8))
    for h, w in [("0", "300"), ("300", "-1"), ("abc", "300"), ("300", "30x")]:
        assert _run([preprocess_tool, img, h, w, tmp_path / "x.bin"]).returncode != 0


def test_build_sh_argument_checks(tmp_path):
    """build.sh rejects bad arguments and a missing MINDSPORE_PATH before building anything."""
    script = INFER_DIR / "build.sh"
    bad = _run(["bash", script, "--bogus"])
    assert bad.returncode != 0 and "usage" in bad.stderr
    env = {k: v for k, v in os.environ.items() if k != "MINDSPORE_PATH"}
    no_ms = _run(["bash", script], env=env)
    assert no_ms.returncode == 1 and "MINDSPORE_PATH" in no_ms.stderr
    env["MINDSPORE_PATH"] = str(tmp_path / "nowhere")
    wrong = _run(["bash", script], env=env)
    assert wrong.returncode == 1 and "libmindspore.so" in wrong.stderr
    assert _run(["bash", script, "--help"]).returncode == 0


# --------------------------------------------------------------------------------------------
# main.cc against a stub MindSpore C++ API. Only the declarations main.cc uses, with the real
# API's names and signatures (include/api/*.h of MindSpore). Behaviour of the stub model:
# one input "x" (float32; shape (-1, C, -1, -1) or fixed via MS_STUB_INPUT_HW="HxW", C = 3 or
# MS_STUB_INPUT_C);
# outputs: 0 = the input tensor itself, 1 = float16 [1.5, -2.0], 2 = int32 [7, -3].
# --------------------------------------------------------------------------------------------
_STUB_HEADERS = {
    "status.h": """
        #pragma once
        #include <cstdint>
        #include <string>
        namespace mindspore {
        enum StatusCode : uint32_t { kSuccess = 0, kMEFailed = 1 };
        class Status {
         public:
          Status() = default;
          Status(enum StatusCode code, const std::string &msg = "") : code_(code), msg_(msg) {}
          std::string ToString() const { return msg_; }
          bool operator==(enum StatusCode c) const { return code_ == c; }
          bool operator!=(enum StatusCode c) const { return code_ != c; }
         private:
          enum StatusCode code_ = kSuccess;
          std::string msg_;
        };
        }  // namespace mindspore
    """,
    "types.h": """
        #pragma once
        #include <cstddef>
        #include <cstdint>
        #include <memory>
        #include <string>
        #include <vector>
        #include "include/api/status.h"
        namespace mindspore {
        enum class DataType : int {
          kTypeUnknown = 0, kNumberTypeBool = 30, kNumberTypeInt8 = 32, kNumberTypeInt16 = 33,
          kNumberTypeInt32 = 34, kNumberTypeInt64 = 35, kNumberTypeUInt8 = 37,
          kNumberTypeFloat16 = 42, kNumberTypeFloat32 = 43, kNumberTypeFloat64 = 44,
        };
        enum ModelType : uint32_t { kMindIR = 0, kAIR = 1, kOM = 2, kONNX = 3 };
        class MSTensor {
         public:
          MSTensor();
          MSTensor(const std::string &name, enum DataType type, const std::vector<int64_t> &shape,
                   const void *data, size_t data_len);
          ~MSTensor();
          std::string Name() const;
          enum DataType DataType() const;
          const std::vector<int64_t> &Shape() const;
          int64_t ElementNum() const;
          std::shared_ptr<const void> Data() const;
          size_t DataSize() const;
         private:
          std::string name_;
          enum DataType type_;
          std::vector<int64_t> shape_;
          std::shared_ptr<std::vector<unsigned char>> bytes_;
        };
        }  // namespace mindspore
    """,
    "context.h": """
        #pragma once
        #include <cstdint>
        #include <memory>
        #include <vector>
        namespace mindspore {
        class DeviceInfoContext { public: virtual ~DeviceInfoContext() = default; };
        class AscendDeviceInfo : public DeviceInfoContext {
         public:
          void SetDeviceID(uint32_t id) { id_ = id; }
          uint32_t GetDeviceID() const { return id_; }
         private:
          uint32_t id_ = 0;
        };
        using Ascend310DeviceInfo = AscendDeviceInfo;
        class Context {
         public:
          std::vector<std::shared_ptr<DeviceInfoContext>> &MutableDeviceInfo() { return infos_; }
         private:
          std::vector<std::shared_ptr<DeviceInfoContext>> infos_;
        };
        }  // namespace mindspore
    """,
    "graph.h": """
        #pragma once
        #include <string>
        namespace mindspore {
        class Graph { public: std::string path; };
        }  // namespace mindspore
    """,
    "cell.h": """
        #pragma once
        #include "include/api/graph.h"
        namespace mindspore {
        class GraphCell {
         public:
          explicit GraphCell(const Graph &graph) : graph_(graph) {}
          const Graph &GetGraph() const { return graph_; }
         private:
          Graph graph_;
        };
        }  // namespace mindspore
    """,
    "model.h": """
        #pragma once
        #include <memory>
        #include <vector>
        #include "include/api/cell.h"
        #include "include/api/context.h"
        #include "include/api/graph.h"
        #include "include/api/status.h"
        #include "include/api/types.h"
        namespace mindspore {
        class Model {
         public:
          Status Build(GraphCell graph, const std::shared_ptr<Context> &model_context = nullptr);
          std::vector<MSTensor> GetInputs();
          Status Predict(const std::vector<MSTensor> &inputs, std::vector<MSTensor> *outputs);
         private:
          bool built_ = false;
        };
        }  // namespace mindspore
    """,
    "serialization.h": """
        #pragma once
        #include <string>
        #include "include/api/graph.h"
        #include "include/api/model.h"
        #include "include/api/status.h"
        #include "include/api/types.h"
        namespace mindspore {
        class Serialization {
         public:
          static Status Load(const std::string &file, ModelType model_type, Graph *graph);
        };
        }  // namespace mindspore
    """,
}

_STUB_SOURCE = """
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include "include/api/model.h"
#include "include/api/serialization.h"
namespace mindspore {
MSTensor::MSTensor() : type_(mindspore::DataType::kTypeUnknown) {}
MSTensor::MSTensor(const std::string &name, enum DataType type, const std::vector<int64_t> &shape,
                   const void *data, size_t data_len)
    : name_(name), type_(type), shape_(shape),
      bytes_(std::make_shared<std::vector<unsigned char>>(data_len)) {
  if (data != nullptr && data_len > 0) std::memcpy(bytes_->data(), data, data_len);
}
MSTensor::~MSTensor() = default;
std::string MSTensor::Name() const { return name_; }
enum DataType MSTensor::DataType() const { return type_; }
const std::vector<int64_t> &MSTensor::Shape() const { return shape_; }
int64_t MSTensor::ElementNum() const {
  int64_t n = 1;
  for (int64_t d : shape_) n *= d;
  return n;
}
std::shared_ptr<const void> MSTensor::Data() const {
  if (!bytes_) return nullptr;
  return std::shared_ptr<const void>(bytes_, bytes_->data());
}
size_t MSTensor::DataSize() const { return bytes_ ? bytes_->size() : 0; }

Status Serialization::Load(const std::string &file, ModelType, Graph *graph) {
  std::FILE *f = std::fopen(file.c_str(), "rb");
  if (f == nullptr) return Status(kMEFailed, "stub: cannot open " + file);
  std::fclose(f);
  graph->path = file;
  return Status(kSuccess);
}
Status Model::Build(GraphCell, const std::shared_ptr<Context> &context) {
  if (!context || context->MutableDeviceInfo().empty()) return Status(kMEFailed, "stub: no device");
  built_ = true;
  return Status(kSuccess);
}
std::vector<MSTensor> Model::GetInputs() {
  const char *channels = std::getenv("MS_STUB_INPUT_C");
  const int64_t c = channels != nullptr ? std::atoi(channels) : 3;
  std::vector<int64_t> shape = {-1, c, -1, -1};
  const char *hw = std::getenv("MS_STUB_INPUT_HW");
  int h = 0, w = 0;
  if (hw != nullptr && std::sscanf(hw, "%dx%d", &h, &w) == 2) shape = {1, c, h, w};
  return {MSTensor("x", mindspore::DataType::kNumberTypeFloat32, shape, nullptr, 0)};
}
Status Model::Predict(const std::vector<MSTensor> &inputs, std::vector<MSTensor> *outputs) {
  if (!built_ || inputs.size() != 1) return Status(kMEFailed, "stub: bad predict call");
  const MSTensor &in = inputs[0];
  outputs->clear();
  outputs->push_back(MSTensor("out0", in.DataType(), in.Shape(), in.Data().get(), in.DataSize()));
  const uint16_t half[2] = {0x3E00, 0xC000};  // 1.5, -2.0
  outputs->push_back(MSTensor("out1", mindspore::DataType::kNumberTypeFloat16, {2}, half, sizeof(half)));
  const int32_t ints[2] = {7, -3};
  outputs->push_back(MSTensor("out2", mindspore::DataType::kNumberTypeInt32, {2}, ints, sizeof(ints)));
  return Status(kSuccess);
}
}  // namespace mindspore
"""


@pytest.fixture(scope="module")
def stub_main(tmp_path_factory) -> Path:
    """Build main.cc (full CMake path, MINDSPORE_PATH set) against the stub MindSpore API."""
    ms = tmp_path_factory.mktemp("ms_stub")
    api = ms / "include" / "api"
    api.mkdir(parents=True)
    for name, text in _STUB_HEADERS.items():
        (api / name).write_text(textwrap.dedent(text))
    (ms / "lib").mkdir()
    (ms / "stub.cc").write_text(_STUB_SOURCE)
    _check(_run(["g++", "-std=c++17", "-O1", "-shared", "-fPIC", "-I", ms, ms / "stub.cc",
                 "-o", ms / "lib" / "libmindspore.so"]), "stub libmindspore.so build")
    build = tmp_path_factory.mktemp("a310_full_build")
    env = dict(os.environ, MINDSPORE_PATH=str(ms))
    _check(_run(["cmake", "-S", INFER_DIR, "-B", build, "-DCMAKE_BUILD_TYPE=Release"], env=env),
           "cmake configure (stub MindSpore)")
    _check(_run(["cmake", "--build", build, "--target", "main", "-j", "2"]), "build main (stub)")
    main = build / "main"
    assert main.is_file()
    return main


def test_main_with_stub_mindspore(stub_main, preprocess_tool, tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    rng = np.random.default_rng(7)
    names = ["b_img.png", "a_img.jpg", "c_img.BMP"]
    for i, name in enumerate(names):
        img = rng.integers(0, 256, size=(50 + 10 * i, 70 + 3 * i, 3), dtype=np.uint8)
        ext = {".png": ".png", ".jpg": ".jpg", ".BMP": ".bmp"}[Path(name).suffix]
        ok, buf = cv2.imencode(ext, img)
        assert ok
        (data / name).write_bytes(buf.tobytes())
    (data / "notes.txt").write_text("ignored")
    mindir = tmp_path / "model.mindir"
    mindir.write_bytes(b"stub")
    out = tmp_path / "out" / "nested"

    proc = _run([stub_main, f"--mindir_path={mindir}", f"--dataset_path={data}", "--device_id=0",
                 "--image_height=40", "--image_width", "64", f"--output_dir={out}"])
    _check(proc, "main (stub)")
    assert "average inference time" in proc.stdout
    # Processed in name order; a_img first.
    order = [line.split()[1] for line in proc.stdout.splitlines() if line.startswith("[")]
    assert [Path(p).name for p in order] == sorted(names)

    expected = {f"{Path(n).stem}_{i}.bin" for n in names for i in range(3)}
    assert {p.name for p in out.iterdir()} == expected
    for name in names:
        stem = Path(name).stem
        fed = np.fromfile(out / f"{stem}_0.bin", np.float32).reshape(1, 3, 40, 64)
        ref = _python_reference(data / name, 40, 64)
        assert float(np.abs(fed - ref).max()) <= TOL
        np.testing.assert_array_equal(np.fromfile(out / f"{stem}_1.bin", np.float32), [1.5, -2.0])
        np.testing.assert_array_equal(np.fromfile(out / f"{stem}_2.bin", np.float32), [7.0, -3.0])


def test_main_errors_with_stub_mindspore(stub_main, tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    cv2.imwrite(str(data / "x.png"), np.zeros((8, 8, 3), np.uint8))
    mindir = tmp_path / "m.mindir"
    mindir.write_bytes(b"stub")
    base = [stub_main, f"--mindir_path={mindir}", f"--dataset_path={data}",
            f"--output_dir={tmp_path / 'o'}"]

    usage = _run([stub_main])
    assert usage.returncode == 2 and "usage" in usage.stderr
    assert _run(base + ["--bogus=1"]).returncode == 2
    assert _run(base + ["--image_height=0"]).returncode == 2
    assert _run(base + ["--device_id=-1"]).returncode == 2
    # Without --output_dir the program writes to ./result_Files: run where that is harmless.
    missing = _run([stub_main, f"--mindir_path={tmp_path / 'no.mindir'}", f"--dataset_path={data}"], cwd=tmp_path)
    assert missing.returncode == 1 and "cannot load MINDIR" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    none = _run([stub_main, f"--mindir_path={mindir}", f"--dataset_path={empty}"], cwd=tmp_path)
    assert none.returncode == 1 and "no .jpg" in none.stderr
    # A fixed model input shape must match --image_height/--image_width.
    env = dict(os.environ, MS_STUB_INPUT_HW="300x300")
    mismatch = _run(base + ["--image_height=320"], env=env)
    assert mismatch.returncode == 1 and "does not match" in mismatch.stderr
    _check(_run(base, env=env), "main with matching fixed input shape")


@pytest.mark.parametrize("channels", [3, 1])
def test_main_crnn_flags_with_stub_mindspore(stub_main, crnn_cfg, tmp_path, channels):
    """main with the CRNN flags (as scripts/run_infer_310.sh passes them) feeds the model
    exactly src.crnn.model.preprocess_image's tensor, RGB or grey; names follow the exported
    LMDB images."""
    from src.crnn.model import preprocess_image
    from src.model_utils.config import parse_cli
    cfg = crnn_cfg if channels == 3 else parse_cli(
        ["--config_path", str(REPO_ROOT / "configs" / "crnn" / "crnn.yaml"), "--image_channels", "1"])
    data = tmp_path / "images"
    data.mkdir()
    crop_dir = tmp_path / "crops"
    crop_dir.mkdir()
    names = {}
    for i, path in enumerate(_word_crops(crop_dir).values(), 1):
        stem = f"IIIT5k_3000_{i:09d}"
        names[stem] = data / f"{stem}{path.suffix}"
        shutil.copyfile(path, names[stem])
    mindir = tmp_path / "crnn.mindir"
    mindir.write_bytes(b"stub")
    out = tmp_path / "out"
    # CRNN exports a fixed (1, C, 32, 100) input
    env = dict(os.environ, MS_STUB_INPUT_HW="32x100", MS_STUB_INPUT_C=str(channels))
    proc = _run([stub_main, f"--mindir_path={mindir}", f"--dataset_path={data}", "--image_height=32",
                 "--image_width=100", f"--image_channels={channels}", *CRNN_FLAGS, f"--output_dir={out}"], env=env)
    _check(proc, "main (stub, CRNN flags)")
    normalisation = ("mean 127.5,127.5,127.5 std 127.5,127.5,127.5" if channels == 3 else "grey, mean 127.5 std 127.5")
    assert f"normalisation: {normalisation}" in proc.stdout
    for stem, path in names.items():
        fed = np.fromfile(out / f"{stem}_0.bin", np.float32).reshape(1, channels, 32, 100)
        rgb = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        diff = float(np.abs(fed - preprocess_image(cfg, rgb)).max())
        assert diff <= 1e-6, f"{stem}: max |C++ - Python| = {diff}"


def test_main_stats_and_channel_errors_with_stub_mindspore(stub_main, tmp_path):
    data = tmp_path / "images"
    data.mkdir()
    cv2.imwrite(str(data / "x.png"), np.zeros((8, 8, 3), np.uint8))
    mindir = tmp_path / "m.mindir"
    mindir.write_bytes(b"stub")
    base = [stub_main, f"--mindir_path={mindir}", f"--dataset_path={data}", f"--output_dir={tmp_path / 'o'}"]
    for flag in ["--mean=1,2", "--mean=x,1,1", "--std=127.5,0,127.5", "--std=-1,1,1"]:
        bad = _run(base + [flag])
        assert bad.returncode == 2 and f"error: {flag.split('=')[0]} must be three" in bad.stderr, bad.stderr
    # The separate-value form takes a negative mean as the value, not as a flag.
    _check(_run(base + ["--mean", "-1,-2,-3"]), "main with a negative mean")
    # A grey model (CRNN image_channels: 1) without --image_channels=1 is refused whether its
    # H, W are fixed or dynamic, and the reverse too.
    for hw in ("32x100", ""):
        env = dict(os.environ, MS_STUB_INPUT_C="1", MS_STUB_INPUT_HW=hw)
        grey = _run(base + ["--image_height=32", "--image_width=100", *CRNN_FLAGS], env=env)
        assert grey.returncode == 1 and "has 1 channels but --image_channels is 3" in grey.stderr, grey.stderr
    rgb = _run(base + ["--image_height=32", "--image_width=100", "--image_channels=1", *CRNN_FLAGS],
               env=dict(os.environ, MS_STUB_INPUT_C="3", MS_STUB_INPUT_HW="32x100"))
    assert rgb.returncode == 1 and "has 3 channels but --image_channels is 1" in rgb.stderr, rgb.stderr
    assert _run(base + ["--image_channels=2"]).returncode == 2
