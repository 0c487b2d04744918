"""Dev-only: check that `nsync model init-tiny` writes models diffusers can load and sample.

    target/debug/nsync model init-tiny /tmp/tiny15
    target/debug/nsync model init-tiny /tmp/tiny2 --variant sd2
    python tools/check_tiny_loads.py /tmp/tiny15 /tmp/tiny2

Needs the dev venv of tools/README.md (torch, diffusers, transformers).
"""

import sys

import numpy as np
import torch
from diffusers import StableDiffusionPipeline

for d in sys.argv[1:]:
    pipe = StableDiffusionPipeline.from_pretrained(d, safety_checker=None)
    out = pipe(
        "a harbour at dawn",
        negative_prompt="blurry",
        num_inference_steps=3,
        height=64,
        width=64,
        output_type="np",
        generator=torch.Generator().manual_seed(0),
    )
    image = out.images[0]
    assert image.shape == (64, 64, 3) and np.isfinite(image).all()
    print(f"{d}: {type(pipe.scheduler).__name__}, {pipe.scheduler.config.prediction_type}: sampled {image.shape}")
