#!/usr/bin/env python3
"""The PyTorch side of the CLIP image feature extractors' throughput: images per second.

    python bench/clip_reference.py --threads 2 [--batch 4] [--repeats 2] [--model clip|csd|both]

Builds, with random initialisation (no download), in f32 on the CPU:
- clip-vit-l14-336: transformers' CLIPVisionModelWithProjection with the vision_config of
  openai/clip-vit-large-patch14-336 (CMMD), output F.normalize(image_embeds);
- csd-vit-l14-224: open_clip's OpenAI-style VisionTransformer (ViT-L/14, 224 px,
  QuickGELU, proj removed) + a 1024x768 style head, output F.normalize(feature @ W) (CSD);
  the same model as tools/make_clip_fixtures.py --full.
Each runs under torch.inference_mode() with torch.set_num_threads(N) (and OMP/MKL threads =
N), on a fixed [batch, 3, S, S] input: one warm-up call, then `repeats` timed calls.
Prints one JSON document: images per wall-clock second, and CPU seconds (all threads,
`time.process_time`) per image, which is less sensitive to other load on the machine.

The nsync (candle) side, same models and batch, release mode:

    RAYON_NUM_THREADS=2 NSYNC_BENCH_BATCH=4 cargo test --release -p nsync-nodes \
        --test clip_vision_parity bench_full_size_throughput -- --ignored --nocapture

Versions used: Python 3.11, torch 2.15.0 (CPU), transformers 5.24.0, open_clip_torch 3.3.0.
"""

import argparse
import importlib.metadata
import json
import os
import sys
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--model", choices=["clip", "csd", "both"], default="both")
    a = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(a.threads)
    os.environ["MKL_NUM_THREADS"] = str(a.threads)

    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))
    from make_clip_fixtures import FULL_CLIP, FULL_CSD, CsdReference
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    results = []

    def time_it(name, size, fn):
        x = torch.randn(a.batch, 3, size, size)
        with torch.inference_mode():
            fn(x)  # warm-up
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(a.repeats):
                fn(x)
            s = time.perf_counter() - t0
            cpu = time.process_time() - c0
        results.append(
            {
                "model": name,
                "batch": a.batch,
                "seconds_per_batch": s / a.repeats,
                "images_per_s": a.batch * a.repeats / s,
                "cpu_s_per_image": cpu / (a.batch * a.repeats),
            }
        )
        print(json.dumps(results[-1]), file=sys.stderr)

    if a.model in ("clip", "both"):
        clip = CLIPVisionModelWithProjection(CLIPVisionConfig(**FULL_CLIP)).eval()
        time_it(
            "clip-vit-l14-336",
            FULL_CLIP["image_size"],
            lambda x: F.normalize(clip(pixel_values=x).image_embeds, dim=-1),
        )
        del clip
    if a.model in ("csd", "both"):
        csd = CsdReference(**FULL_CSD).eval()
        time_it("csd-vit-l14-224", FULL_CSD["image_size"], lambda x: csd(x)[1])
        del csd

    print(
        json.dumps(
            {
                "threads": a.threads,
                "torch": torch.__version__,
                "transformers": importlib.metadata.version("transformers"),
                "attn_implementation": "sdpa (transformers' default)",
                "results": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
