#!/usr/bin/env python3
"""The PyTorch peer on a GPU, for side-by-side ratios with `kdad --device cuda bench vit` and
`kdad --device cuda bench train-step` on the same machine.

* ViT forward: timm DINOv2 ViT-B/14 (random init), weights cast to bf16 (as kdad stores a
  frozen teacher), eval, no_grad, SDPA attention; eager PyTorch. Per batch size: best and
  median of --reps forwards after warm-ups, timed with CUDA events.
* Training step: the CPU peer's Dinomaly-style step (shared/peer/peer_train_cpu.py, imported
  from --peer-dir: teacher blocks 0..9, neck, 8 linear-attention decoder blocks, two-group
  cosine loss with hard mining, clipping, AdamW with AMSGrad) under bf16 autocast, teacher
  weights in bf16, fused AdamW. Phases are separated by torch.cuda.synchronize().

Usage: python3 torch_gpu.py --peer-dir DIR [--batches 1,8,64] [--train-batches 2,16]
"""
import argparse
import statistics
import sys
import time

import torch
import torch.nn as nn


def vit_forward(batches, img, reps):
    import timm
    m = timm.create_model("vit_base_patch14_dinov2", pretrained=False, img_size=img, num_classes=0)
    m = m.cuda().to(torch.bfloat16).eval()
    print(f"# ViT-B/14 forward, {img}x{img}, bf16 weights, eager, torch {torch.__version__}, "
          f"timm {timm.__version__}, {torch.cuda.get_device_name()}")
    print(f"{'batch':>6} {'best ms':>10} {'median ms':>10} {'ms/img':>9} {'img/s':>9}")
    for b in batches:
        x = torch.randn(b, 3, img, img, device="cuda", dtype=torch.bfloat16)
        with torch.no_grad():
            for _ in range(3):
                m(x)
            ts = []
            for _ in range(reps):
                s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                s.record()
                m(x)
                e.record()
                e.synchronize()
                ts.append(s.elapsed_time(e))
        best = min(ts)
        print(f"{b:>6} {best:>10.2f} {statistics.median(ts):>10.2f} {best / b:>9.3f} {b / best * 1e3:>9.1f}",
              flush=True)


def train_step(peer, batch, img, steps):
    torch.manual_seed(0)
    dim, heads, mlp = peer.DIM, peer.HEADS, peer.MLP
    teacher = peer.build_teacher(img, 0, "sdpa").cuda().to(torch.bfloat16)
    neck = peer.Neck(dim, mlp, 0.2)
    decoder = nn.ModuleList([peer.DecoderBlock(dim, heads, mlp, "linear") for _ in range(8)])
    trainable = nn.ModuleList([neck, decoder]).cuda().train()
    params = list(trainable.parameters())
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4, eps=1e-10, amsgrad=True, fused=True)
    keep, groups, side = list(range(2, 10)), [[0, 1, 2, 3], [4, 5, 6, 7]], img // peer.PATCH
    x = torch.randn(batch, 3, img, img, device="cuda", dtype=torch.bfloat16)

    def to_map(t):
        return t[:, 1:, :].permute(0, 2, 1).reshape(t.shape[0], dim, side, side).float().contiguous()

    def one():
        sync = torch.cuda.synchronize
        t = [time.perf_counter()]
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            feats = peer.teacher_features(teacher, x, 10, keep)
        sync(); t.append(time.perf_counter())
        with torch.autocast("cuda", dtype=torch.bfloat16):
            h = neck(torch.stack(feats, 1).mean(1))
            outs = []
            for blk in decoder:
                h = blk(h)
                outs.append(h)
            outs = outs[::-1]
            en = [to_map(torch.stack([feats[i] for i in g], 1).mean(1)) for g in groups]
            de = [to_map(torch.stack([outs[i] for i in g], 1).mean(1)) for g in groups]
            loss = peer.hm_cosine_loss(en, de, 0.9, 0.1)
        sync(); t.append(time.perf_counter())
        loss.backward()
        sync(); t.append(time.perf_counter())
        torch.nn.utils.clip_grad_norm_(params, max_norm=0.1)
        opt.step()
        sync(); t.append(time.perf_counter())
        return [(b - a) * 1e3 for a, b in zip(t, t[1:])]

    for _ in range(2):
        one()
    runs = [one() for _ in range(steps)]
    med = [statistics.median(c) for c in zip(*runs)]
    print(f"train step batch {batch} at {img}: {sum(med):.1f} ms = teacher forward {med[0]:.1f} + "
          f"student forward+loss {med[1]:.1f} + backward {med[2]:.1f} + clip+optimiser {med[3]:.1f}; "
          f"{batch / sum(med) * 1e3:.1f} images/s", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer-dir", required=True, help="folder holding peer_train_cpu.py")
    ap.add_argument("--img", type=int, default=224)
    ap.add_argument("--batches", default="1,8,64")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--train-batches", default="2,16")
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    sys.path.insert(0, a.peer_dir)
    import peer_train_cpu as peer
    torch.backends.cuda.matmul.allow_tf32 = True
    vit_forward([int(b) for b in a.batches.split(",")], a.img, a.reps)
    for b in a.train_batches.split(","):
        train_step(peer, int(b), a.img, a.steps)


if __name__ == "__main__":
    main()
