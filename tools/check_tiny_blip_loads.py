#!/usr/bin/env python3
"""Check that transformers loads the tiny BLIP captioner nsync writes, and captions alike.

Dev-only (CI never runs it). ``write_tiny_blip`` (``nsync model init-tiny``) writes a
tiny random BLIP in the Hugging Face layout; this script loads that folder with
transformers' ``BlipForConditionalGeneration`` and ``BlipProcessor`` (PIL image
backend), captions images greedily and, if the folder holds the ``captions.json``
that the Rust test writes next to it, checks that the token ids are the same.

    NSYNC_TINY_BLIP_OUT=/tmp/tiny_blip cargo test -p nsync-nodes --test blip_parity write_tiny
    python tools/check_tiny_blip_loads.py /tmp/tiny_blip

Exits non-zero on any difference.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import (  # noqa: E402
    BertTokenizer,
    BlipForConditionalGeneration,
    BlipImageProcessorPil,
    BlipProcessor,
)

REPO = Path(__file__).resolve().parent.parent
IMAGES = REPO / "tests/fixtures/caption/images"


def main() -> None:
    model_dir = Path(sys.argv[1])
    torch.set_num_threads(1)
    model = BlipForConditionalGeneration.from_pretrained(model_dir).eval()
    processor = BlipProcessor(
        image_processor=BlipImageProcessorPil.from_pretrained(model_dir),
        tokenizer=BertTokenizer.from_pretrained(model_dir),
    )
    expected_path = model_dir / "captions.json"
    expected = json.loads(expected_path.read_text()) if expected_path.exists() else None
    cases = expected["cases"] if expected else [
        {"image": p.name, "prompt": "a painting of", "max_new_tokens": 20} for p in sorted(IMAGES.glob("*.png"))
    ]
    failures = 0
    for case in cases:
        image = Image.open(IMAGES / case["image"]).convert("RGB")
        kwargs = {}
        if case.get("prompt"):
            kwargs["text"] = case["prompt"]
        inputs = processor(images=image, return_tensors="pt", **kwargs)
        prefix_len = 1 if "input_ids" not in inputs else inputs.input_ids.shape[1] - 1
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=case["max_new_tokens"], do_sample=False)
        new = out[0].tolist()[prefix_len:]
        print(json.dumps({"image": case["image"], "token_ids": new,
                          "caption": processor.decode(out[0], skip_special_tokens=True)}))
        if expected and new != case["token_ids"]:
            print(f"  differs from nsync: {case['token_ids']}", file=sys.stderr)
            failures += 1
    if expected:
        print(f"{len(cases) - failures}/{len(cases)} captions identical to nsync's", file=sys.stderr)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
