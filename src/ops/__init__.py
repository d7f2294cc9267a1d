"""Operators MindSpore's CPU backend runs slowly, reimplemented as C++ kernels for
``ops.Custom(func_type="aot")``: the sources live in ``kernels/``, are compiled on first use
(`aot.load_library`) and are used only on CPU; other devices and exported graphs keep the
standard operators."""
