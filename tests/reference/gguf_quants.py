"""Q8_0, Q4_0 and Q4_1 blocks from the gguf package's quantizer (llama.cpp's reference
rounding, as convert_hf_to_gguf.py --outtype q8_0 uses it) for seeded random rows, with a few
edge cases (all zeros, one large value, equal values). Hearth's quantizer must give the same
bytes: tests/tests/gguf_export.rs.

    V/bin/python tests/reference/gguf_quants.py
"""
import json
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType, quants

OUT = Path(__file__).resolve().parents[1] / "fixtures" / "gguf-quants.json"


def main():
    rng = np.random.default_rng(7)
    rows = rng.normal(0, 1, size=(6, 64)).astype(np.float32)
    rows[1] *= 1e-3
    rows[2, :32] = 0.0
    rows[3, 5] = 40.0
    rows[4, 32:] = 0.25
    rows[5] = rng.uniform(-2, 2, size=64).astype(np.float32)
    out = {"rows": 6, "cols": 64, "data": [float(x) for x in rows.flatten()]}
    for name, t in [("q8_0", GGMLQuantizationType.Q8_0), ("q4_0", GGMLQuantizationType.Q4_0), ("q4_1", GGMLQuantizationType.Q4_1)]:
        out[name] = quants.quantize(rows, t).tobytes().hex()
    OUT.write_text(json.dumps(out) + "\n")
    print("wrote", OUT)


if __name__ == "__main__":
    main()
