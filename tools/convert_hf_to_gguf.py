#!/usr/bin/env python3
"""Convert an original MiniCPM-V checkpoint to GGUF: the same as `minicpmv-edge convert`.

    python tools/convert_hf_to_gguf.py HF_DIR -o OUT_DIR [--outtype f32|f16|bf16|q8_0]
"""

import sys

from minicpmv_edge.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
