"""Detection and OCR model zoo on MindSpore.

Importing this package sets ONEDNN_MAX_CPU_ISA=AVX2 unless the user chose a value: without it
oneDNN falls back to a reference kernel for 3x3 convolutions on these CPUs (a ResNet50 step
took 47 s instead of 1.4 s). It must happen before MindSpore runs its first op, so every entry
point imports `src` before `mindspore`.
"""
import os

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
# MindSpore logs every graph-compile notice at WARNING by default; keep the console readable.
os.environ.setdefault("GLOG_v", "3")
