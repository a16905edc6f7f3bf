#!/usr/bin/env python3
"""Convert a Meta DINOv2 checkpoint (.pth) into safetensors that kdad loads.

Accepts the published backbones (dinov2_vit{s,b,l}14[_reg4]_pretrain.pth: a plain state dict)
and training checkpoints that nest it ({"teacher": {...}}, {"model": {...}} or
{"state_dict": {...}}, names under "backbone." and next to heads). Names are kept as they are:
kdad reads Meta names directly (fused qkv, chunked "blocks.C.N." and "mask_token" included)
and ignores tensors outside the backbone prefix. Non-tensor entries are dropped.

Usage:
    python weights/convert_meta_pth.py dinov2_vitb14_reg4_pretrain.pth dinov2_vitb14_reg4.safetensors
        [--dtype keep|f32|bf16|f16]

Needs torch and safetensors (pip install torch safetensors). The output is written to a
temporary file and renamed, so an interrupted run leaves no partial file.
"""
import argparse
import os
import sys


def unwrap(obj):
    """The state dict inside a checkpoint: the first nested dict under a known key, else obj."""
    for key in ("teacher", "model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            return obj[key]
    return obj


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pth")
    ap.add_argument("out")
    ap.add_argument("--dtype", choices=("keep", "f32", "bf16", "f16"), default="keep")
    args = ap.parse_args()

    import torch
    from safetensors.torch import save_file

    sd = unwrap(torch.load(args.pth, map_location="cpu", weights_only=True))
    if not isinstance(sd, dict):
        sys.exit(f"{args.pth}: expected a state dict, found {type(sd).__name__}")
    cast = {"keep": None, "f32": torch.float32, "bf16": torch.bfloat16, "f16": torch.float16}[args.dtype]
    out = {}
    for name, t in sd.items():
        if not torch.is_tensor(t):
            continue
        if cast is not None and t.is_floating_point():
            t = t.to(cast)
        # safetensors refuses tensors that share storage: give each its own.
        out[name] = t.detach().contiguous().clone()
    if not any(k.endswith("cls_token") for k in out):
        sys.exit(f"{args.pth}: no cls_token among {len(out)} tensors; not a DINOv2 ViT checkpoint")
    tmp = args.out + ".tmp"
    save_file(out, tmp, metadata={"source_file": os.path.basename(args.pth), "converter": "kdad convert_meta_pth.py"})
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {len(out)} tensors, "
          f"{sum(t.numel() for t in out.values()):,} values")


if __name__ == "__main__":
    main()
