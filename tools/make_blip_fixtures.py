#!/usr/bin/env python3
"""Generate a tiny random BLIP captioner and its reference outputs.

Dev-only tool (CI never runs it). It builds a tiny random-weight
``BlipForConditionalGeneration`` (transformers 5) with a tiny BERT WordPiece
tokenizer, saves it in the Hugging Face layout of the hub captioning repos, and
records what transformers computes with it on three small painting crops, so
the Rust implementation (``nodes/src/captioning/``) can prove parity without
Python:

    OUT/tiny_blip/            config.json, model.safetensors, tokenizer.json,
                              tokenizer_config.json, preprocessor_config.json
    OUT/images/*.png          the three input images (crops of pipelines/data/monet)
    OUT/fixtures.safetensors  reference tensors (f32; the Pillow resizes u8)
    OUT/fixtures.json         everything else; each tensor named with its provenance

Usage (from the repository root):

    python tools/make_blip_fixtures.py --seed 0 --out tests/fixtures/caption

The vocabulary is the one ``nsync``'s ``write_tiny_blip`` builds (the same
rule over ``nodes/src/diffusion/tiny_words.txt``): five BERT specials,
punctuation, digits, letters, ``##``-letters and digits, the words, then
``[DEC]`` (bos) and ``[ENC]`` as added special tokens, as in the hub repos.

Weights: every parameter is redrawn from one seeded generator (weights
N(0, 1/fan_in), biases N(0, 0.1²), layer-norm scales 1 + N(0, 0.1²), embeddings
N(0, 1) / N(0, 0.5²)), so that a wrongly loaded bias or norm shows; the
[SEP] logit bias is raised so that some greedy captions end before
``max_new_tokens``. The script checks that every greedy step's winning logit
beats the runner-up by a clear margin (else the exact-id comparison would be
fragile) and that reloading the saved folder reproduces the captions.

Preprocessing is transformers 5's PIL backend (``BlipImageProcessorPil``:
PIL bicubic on 8-bit RGB, rescale, normalise), which is what the original BLIP
code and a transformers install without torchvision use. With torchvision
installed, transformers 5 defaults to a tensor resize that differs by up to one
8-bit level; the difference is recorded (``torchvision_pixel_max_abs_diff``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shutil
import string
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import (  # noqa: E402
    BertTokenizer,
    BlipConfig,
    BlipForConditionalGeneration,
    BlipImageProcessorPil,
    BlipProcessor,
)

REPO = Path(__file__).resolve().parent.parent
WORDS = REPO / "nodes/src/diffusion/tiny_words.txt"
PROMPT = "a painting of"
MAX_NEW_TOKENS = 20
IMAGE_SIZE = 96

# (source image, crop box) → the three inputs: a downscale, an upscale of a
# non-square crop, and an exact-size crop (PIL copies it unchanged).
IMAGES = [
    ("pipelines/data/monet/train/000c1e3bff.jpg", (10, 20, 170, 140), "downscale"),
    ("pipelines/data/monet/train/011835cfbf.jpg", (100, 60, 172, 160), "upscale"),
    ("pipelines/data/monet/train/0260d15306.jpg", (40, 40, 136, 136), "same_size"),
]

# Pillow bicubic resizes of images/downscale.png (160×120) recorded byte for byte: up and
# down in each direction, and both orders of Pillow's two passes (see pil_resize.rs).
RESIZES = [(96, 96), (40, 30), (30, 40), (150, 50), (50, 150), (81, 119), (161, 60), (7, 5), (200, 13), (170, 121)]

TOKENIZER_CORPUS = [
    "a painting of",
    "A Painting Of",
    "a photography of",
    "an oil painting, of a bridge over the water!",
    "  leading and trailing   spaces\t\nand tabs ",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m",
    "don't it's we'll (1872) 3.5 10,000",
    "xylophone zebra quizzical unknownword",
    "[DEC] a boat [SEP] on the [ENC] sea [PAD]",
    "\u6771\u4eac\u306e\u591c and a night",
    "",
    "a" * 120,
]


def versions() -> dict:
    def v(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": v("tokenizers"),
        "safetensors": v("safetensors"),
        "numpy": np.__version__,
        "pillow": v("pillow"),
        "torchvision": v("torchvision"),
    }


def build_vocab() -> list[str]:
    """The tiny WordPiece vocabulary; `write_tiny_blip` in Rust builds the same list."""
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    punct = list(".,'!?-():;\"/&")
    chars = list(string.digits) + list(string.ascii_lowercase)
    toks = specials + punct + chars + ["##" + c for c in chars]
    seen = set(toks)
    words = sorted({w.strip() for w in WORDS.read_text().splitlines() if w.strip()})
    for w in words:
        if w not in seen:
            toks.append(w)
            seen.add(w)
    return toks


def build_tokenizer(vocab: list[str]) -> BertTokenizer:
    tok = BertTokenizer(vocab={t: i for i, t in enumerate(vocab)})
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


def model_config(tok: BertTokenizer) -> BlipConfig:
    text = dict(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=64,
        hidden_act="gelu",
        layer_norm_eps=1e-12,
        bos_token_id=tok.convert_tokens_to_ids("[DEC]"),
        # As in the hub configs, eos_token_id is not [SEP]: generation stops at sep_token_id.
        eos_token_id=2,
        pad_token_id=tok.pad_token_id,
        sep_token_id=tok.sep_token_id,
    )
    vision = dict(
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=IMAGE_SIZE,
        patch_size=16,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
    )
    return BlipConfig(text_config=text, vision_config=vision, projection_dim=32, image_text_hidden_size=32)


@torch.no_grad()
def fill_random(model: BlipForConditionalGeneration, seed: int, sep_id: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():  # tied parameters appear once
        n = torch.randn(p.shape, generator=g, dtype=torch.float32)
        leaf = name.rsplit(".", 1)[-1]
        is_norm = "LayerNorm" in name or "layer_norm" in name or "layernorm" in name
        if is_norm and leaf == "weight":
            p.copy_(1.0 + 0.1 * n)
        elif leaf == "bias" or name.endswith("predictions.bias"):
            p.copy_(0.1 * n)
        elif "word_embeddings" in name:
            p.copy_(n)
        elif "embedding" in name and "patch_embedding" not in name:
            p.copy_(0.5 * n)
        else:
            fan_in = int(np.prod(p.shape[1:])) if p.dim() > 1 else p.shape[0]
            p.copy_(n / fan_in**0.5)
    # Make [SEP] a plausible next token, so that some captions stop early.
    model.text_decoder.cls.predictions.bias[sep_id] += 9.0


def load_images() -> list[Image.Image]:
    out = []
    for path, box, _ in IMAGES:
        img = Image.open(REPO / path).convert("RGB").crop(box)
        out.append(img)
    return out


def margins(step_logits: list[torch.Tensor], lengths: list[int]) -> float:
    """Smallest (top-1 − top-2) over every step that decided a real token."""
    m = float("inf")
    for s, lg in enumerate(step_logits):
        for b in range(lg.shape[0]):
            if s < lengths[b]:
                top = torch.topk(lg[b], 2).values
                m = min(m, float(top[0] - top[1]))
    return m


def run(seed: int, out: Path, min_margin: float) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    vocab = build_vocab()
    tok = build_tokenizer(vocab)
    cfg = model_config(tok)
    model = BlipForConditionalGeneration(cfg).eval()
    sep_id = tok.sep_token_id
    fill_random(model, seed, sep_id)

    if out.exists():
        shutil.rmtree(out)
    mdir = out / "tiny_blip"
    (out / "images").mkdir(parents=True)
    image_proc = BlipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    processor = BlipProcessor(image_processor=image_proc, tokenizer=tok)
    model.save_pretrained(mdir)
    tok.save_pretrained(mdir)
    image_proc.save_pretrained(mdir)
    # The hub repos carry no processor_config.json; preprocessor_config.json names the class.
    for extra in ["processor_config.json", "generation_config.json"]:
        (mdir / extra).unlink(missing_ok=True)

    images = load_images()
    names = []
    for (path, box, tag), img in zip(IMAGES, images):
        name = f"{tag}.png"
        img.save(out / "images" / name)
        names.append(name)
    # Read back exactly what is committed.
    images = [Image.open(out / "images" / n).convert("RGB") for n in names]

    tensors: dict[str, torch.Tensor] = {}
    provenance: dict[str, str] = {}

    def add(name: str, t: torch.Tensor, how: str) -> None:
        tensors[name] = t.detach().to(torch.float32).contiguous().clone()
        provenance[name] = how

    for w, h in RESIZES:
        r = np.array(images[0].resize((w, h), Image.BICUBIC))
        tensors[f"resize_{w}x{h}"] = torch.from_numpy(r.copy())  # uint8 [h, w, 3]
        provenance[f"resize_{w}x{h}"] = f"np.array(Image.open('images/{names[0]}').resize(({w}, {h}), Image.BICUBIC)), uint8"

    pixel_values = processor(images=images, return_tensors="pt").pixel_values
    add("pixel_values", pixel_values, "BlipImageProcessorPil(size=96)(images).pixel_values")
    tv_diff = None
    try:
        from transformers import BlipImageProcessor

        tv = BlipImageProcessor(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})(images, return_tensors="pt")
        tv_diff = float((tv.pixel_values - pixel_values).abs().max())
    except Exception as e:  # torchvision absent
        print(f"(torchvision backend not compared: {e})", file=sys.stderr)

    with torch.no_grad():
        vision = model.vision_model(pixel_values=pixel_values).last_hidden_state
    add("vision_last_hidden_state", vision, "model.vision_model(pixel_values).last_hidden_state")

    cases = {}
    for case, prompt in [("no_prompt", None), ("prompt", PROMPT)]:
        kwargs = {}
        if prompt is not None:
            enc = processor(text=[prompt] * len(images), return_tensors="pt")
            kwargs["input_ids"] = enc.input_ids
            kwargs["attention_mask"] = enc.attention_mask
        with torch.no_grad():
            res = model.generate(
                pixel_values=pixel_values,
                max_new_tokens=MAX_NEW_TOKENS,
                do_sample=False,
                num_beams=1,
                return_dict_in_generate=True,
                output_logits=True,
                **kwargs,
            )
        seqs = res.sequences
        prefix_len = 1 if prompt is None else kwargs["input_ids"].shape[1] - 1
        rows, lengths = [], []
        for b in range(seqs.shape[0]):
            row = seqs[b].tolist()
            new = row[prefix_len:]
            if sep_id in new:
                new = new[: new.index(sep_id) + 1]
            rows.append(row[:prefix_len] + new)
            lengths.append(len(new))
        # Each image alone gives the same tokens as the batch.
        for b in range(len(images)):
            one = {k: v[b : b + 1] for k, v in kwargs.items()}
            with torch.no_grad():
                s = model.generate(
                    pixel_values=pixel_values[b : b + 1], max_new_tokens=MAX_NEW_TOKENS, do_sample=False, **one
                )
            assert s[0].tolist() == rows[b], (case, b, s[0].tolist(), rows[b])
        step_logits = list(res.logits)
        m = margins(step_logits, lengths)
        if m < min_margin:
            sys.exit(f"{case}: smallest greedy margin {m:.3g} < {min_margin}: choose another --seed")
        logits = torch.stack(step_logits, dim=0)  # [steps, batch, vocab]
        add(
            f"logits_{case}",
            logits,
            f"generate(..., output_logits=True).logits stacked [step, image, vocab]; prompt={prompt!r}; "
            "steps after an image's [SEP] are padding steps transformers still computes",
        )
        captions = []
        for b, row in enumerate(rows):
            full = processor.decode(row, skip_special_tokens=True)
            head = processor.decode(row[:prefix_len], skip_special_tokens=True)
            new = processor.decode(row[prefix_len:], skip_special_tokens=True)
            caption = full[len(head):].lstrip() if full.startswith(head) else new
            captions.append(
                {"image": names[b], "token_ids": row, "new_tokens": lengths[b], "decoded_full": full,
                 "caption": caption.strip()}
            )
        cases[case] = {
            "prompt": prompt,
            "prefix_ids": seqs[0, :prefix_len].tolist(),
            "max_new_tokens": MAX_NEW_TOKENS,
            "min_greedy_margin": m,
            "captions": captions,
        }
        print(case, [c["caption"] for c in captions], f"margin {m:.3f}", file=sys.stderr)

    # Reloading the saved folder reproduces the captions.
    reloaded = BlipForConditionalGeneration.from_pretrained(mdir).eval()
    proc2 = BlipProcessor(image_processor=BlipImageProcessorPil.from_pretrained(mdir),
                          tokenizer=BertTokenizer.from_pretrained(mdir))
    pv2 = proc2(images=images, return_tensors="pt").pixel_values
    assert torch.equal(pv2, pixel_values)
    with torch.no_grad():
        s = reloaded.generate(pixel_values=pv2, max_new_tokens=MAX_NEW_TOKENS)
    for b, c in enumerate(cases["no_prompt"]["captions"]):
        row = s[b].tolist()[: len(c["token_ids"])]
        assert row == c["token_ids"], ("reloaded", b, row, c["token_ids"])

    corpus = []
    for text in TOKENIZER_CORPUS:
        corpus.append({"text": text, "ids": tok(text).input_ids})
    decode_cases = []
    g = torch.Generator().manual_seed(seed + 1)
    for _ in range(12):
        ids = torch.randint(0, len(tok), (int(torch.randint(1, 15, (1,), generator=g)),), generator=g).tolist()
        decode_cases.append({"ids": ids, "text": tok.decode(ids, skip_special_tokens=True)})

    save_file(tensors, str(out / "fixtures.safetensors"))
    doc = {
        "generator": "tools/make_blip_fixtures.py",
        "seed": seed,
        "versions": versions(),
        "determinism": "CPU, torch.set_num_threads(1), torch.use_deterministic_algorithms(True)",
        "resizes": [[w, h] for w, h in RESIZES],
        "images": [{"file": n, "source": p, "crop_box": list(b), "kind": t} for n, (p, b, t) in zip(names, IMAGES)],
        "preprocessing": "transformers BlipImageProcessorPil (PIL bicubic on uint8, x/255 in f64 -> f32, (x-mean)/std in f32)",
        "torchvision_pixel_max_abs_diff": tv_diff,
        "vocab_size": len(tok),
        "special_ids": {
            "pad": tok.pad_token_id, "unk": tok.unk_token_id, "cls": tok.cls_token_id, "sep": sep_id,
            "bos": tok.convert_tokens_to_ids("[DEC]"), "enc": tok.convert_tokens_to_ids("[ENC]"),
        },
        "generation": cases,
        "tokenizer": {"corpus": corpus, "decode": decode_cases},
        "tensors": {k: {"shape": list(v.shape), "produced_by": provenance[k]} for k, v in tensors.items()},
    }
    (out / "fixtures.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
    print(f"wrote {out}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "tests/fixtures/caption")
    ap.add_argument("--min-margin", type=float, default=1e-2,
                    help="smallest accepted top-1 minus top-2 logit at a greedy step")
    args = ap.parse_args()
    run(args.seed, args.out, args.min_margin)


if __name__ == "__main__":
    main()
