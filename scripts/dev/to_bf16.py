#!/usr/bin/env python3
"""Write a bf16 copy of a safetensors file (f32 tensors rounded to nearest even; others kept).

kdad stores a frozen teacher in bf16 on the GPU anyway, so a bf16 file gives the GPU the same
weights at half the size (scripts/gpu-bundle.sh uses it to fit the device's transfer limit).
Usage: to_bf16.py IN.safetensors OUT.safetensors
"""
import json
import struct
import sys

import numpy as np


def main(src, dst):
    raw = open(src, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out_header, chunks, offset = {}, [], 0
    for name, info in header.items():
        if name == "__metadata__":
            out_header[name] = info
            continue
        a, b = info["data_offsets"]
        blob, dtype = data[a:b], info["dtype"]
        if dtype == "F32":
            bits = np.frombuffer(blob, dtype="<u4").astype(np.uint64)
            bits = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
            blob, dtype = bits.astype("<u2").tobytes(), "BF16"
        out_header[name] = {"dtype": dtype, "shape": info["shape"],
                            "data_offsets": [offset, offset + len(blob)]}
        chunks.append(blob)
        offset += len(blob)
    head = json.dumps(out_header).encode()
    head += b" " * (-len(head) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(head)) + head)
        for c in chunks:
            f.write(c)


if __name__ == "__main__":
    main(*sys.argv[1:3])
