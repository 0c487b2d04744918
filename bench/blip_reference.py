#!/usr/bin/env python3
"""Reference throughput: transformers' BLIP-large captioning, random weights, on the CPU.

The counterpart of nsync's `blip_large_throughput` (nodes/tests/blip_parity.rs): the
`Salesforce/blip-image-captioning-large` architecture (ViT-L/16 at 384 px, BERT-base
decoder, 30524-token vocabulary) with random weights, the same images
(`pipelines/data/monet/train`, first N by name), preprocessed by `BlipImageProcessorPil`,
captioned by `model.generate(pixel_values, do_sample=False, num_beams=1,
max_new_tokens=20)` in one batch, float32, `torch.set_num_threads(THREADS)`.

    python bench/blip_reference.py --threads 2 --batch 4 --reps 2

Prints images/s, wall-clock and CPU seconds per image (the steadier measure on a shared
machine), new tokens per image and the vision encoder's share.
Dev-only: needs torch + transformers (tools/requirements-dev.txt); CI never runs it.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import BlipConfig, BlipForConditionalGeneration, BlipImageProcessorPil  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# The hub config.json of Salesforce/blip-image-captioning-large (fields that shape compute).
LARGE = dict(
    text_config=dict(
        vocab_size=30524, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
        num_attention_heads=12, max_position_embeddings=512, hidden_act="gelu", layer_norm_eps=1e-12,
        bos_token_id=30522, sep_token_id=102, pad_token_id=0, eos_token_id=2,
    ),
    vision_config=dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        image_size=384, patch_size=16, hidden_act="gelu", layer_norm_eps=1e-5,
    ),
)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--max-new-tokens", type=int, default=20)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    t0 = time.perf_counter()
    model = BlipForConditionalGeneration(BlipConfig(**LARGE)).eval()
    print(f"random BLIP-large built in {time.perf_counter() - t0:.1f} s "
          f"(torch {torch.__version__}, {args.threads} threads)")
    files = sorted((REPO / "pipelines/data/monet/train").glob("*.jpg"))[: args.batch]
    images = [Image.open(f).convert("RGB") for f in files]
    proc = BlipImageProcessorPil(size={"height": 384, "width": 384})
    pixels = proc(images, return_tensors="pt").pixel_values

    with torch.inference_mode():
        model.generate(pixel_values=pixels[:1], max_new_tokens=2, do_sample=False)  # warm-up
        tokens = 0
        t, c = time.perf_counter(), time.process_time()
        for _ in range(args.reps):
            out = model.generate(pixel_values=pixels, max_new_tokens=args.max_new_tokens,
                                 do_sample=False, num_beams=1)
            for row in out.tolist():
                new = row[1:]
                tokens += new.index(102) + 1 if 102 in new else len(new)
        s, cpu = time.perf_counter() - t, time.process_time() - c
        n = args.reps * args.batch
        print(f"BLIP-large random, batch {args.batch}: {n / s:.3f} images/s ({s / n:.2f} s/image wall, "
              f"{cpu / n:.2f} CPU s/image), {tokens / n:.1f} new tokens/image")
        t, c = time.perf_counter(), time.process_time()
        model.vision_model(pixel_values=pixels)
        print(f"  vision encoder alone: {(time.perf_counter() - t) / args.batch:.2f} s/image wall, "
              f"{(time.process_time() - c) / args.batch:.2f} CPU s/image")


if __name__ == "__main__":
    main()
