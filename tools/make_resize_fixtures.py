#!/usr/bin/env python3
"""Reference fixtures for the evaluator's image preprocessing (dev-only; CI never runs Python).

Writes `tests/fixtures/eval/preprocess/`: three crops of real public-domain paintings from
`../shared/datasets` saved as PNG (lossless, so the Rust test reads exactly the pixels the
references were computed from), and `refs.json`, what the reference Python tools compute on
them and on a few images derived from them in both languages (a mosaic, a large synthetic
image given by an integer formula, 1-pixel rows and columns, a 3x2 image):

- `pil_u8` / `pil_f32`: Pillow `Image.resize` on 8-bit RGB (the fixed-point path) and on
  per-channel float 'F' images, every filter that `pil_resample.rs` implements;
- `cmmd`: cmmd-pytorch's `CMMDDataset._center_crop_and_resize` (square crop, PIL bicubic
  336), `/ 255.0`, its `_resize_bicubic` (torch bicubic at the same size: identity) and
  transformers' `CLIPImageProcessor` normalisation with the CLIP mean/std;
- `csd`: the CSD repository's `transforms_branch0` (torchvision Resize(224, BICUBIC) on a
  PIL image, CenterCrop(224), ToTensor, Normalize with the CLIP mean/std);
- `clean_fid`: clean-fid's "clean" resizer (`make_resizer("PIL", False, "bicubic",
  (299, 299))`: float 'F' bicubic per channel, clip to [0, 255]) and its `(x - 128) / 128`;
- `pytorch_fid`: `ToTensor()` then `F.interpolate(size=(299, 299), mode="bilinear",
  align_corners=False)` and `2x - 1` as pytorch-fid's InceptionV3 does (the same input as
  gan-metrics-pytorch's `np.float32 / 255.` path, which the script asserts).

Bit-exact results are stored as blake3 digests of their bytes (u8 HWC for images, f32
little-endian for float tensors) plus a few samples for diagnosis; the torch bilinear resize
(tolerance 1e-6; its digest too, for information) as 256 samples, per-channel sums and +-1 checksums whose signs come from
the LCG of `shared/docs/metrics.md` (`s = s*6364136223846793005 + 1442695040888963407`,
step before use, sign = top bit).

Versions the committed fixtures were generated with (Python 3.11):
    pillow==13.0.0 numpy==2.4.6 torch==2.15.0 torchvision==0.29.2 transformers==5.24.0
    clean-fid==0.1.35 (installed with --no-deps; only cleanfid.resize is imported)
    blake3==1.0.11

Usage, from the repository root:
    python tools/make_resize_fixtures.py [--datasets ../shared/datasets]
                                         [--out tests/fixtures/eval/preprocess]
"""

import argparse
import json
import os
from pathlib import Path

import blake3
import numpy as np
import PIL
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image
from torchvision import transforms
from torchvision.transforms import InterpolationMode

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# (name, dataset file, crop box (left, top, right, bottom)): three aspect ratios, odd sizes.
SOURCES = [
    ("wide", "monet/test/d4116437bb.jpg", (0, 47, 256, 210)),  # 256x163
    ("tall", "vangogh/test/00437.jpg", (61, 0, 192, 256)),  # 131x256
    ("squarish", "monet/train/000c1e3bff.jpg", (13, 17, 242, 244)),  # 229x227
]

# The mosaic: a black 509x431 canvas with these pastes, in order (source, left, top). Real
# painting content larger than every target size, so that every recipe downscales it.
MOSAIC_SIZE = (509, 431)
MOSAIC_PASTES = [
    ("squarish", 0, 0),
    ("tall", 240, 10),
    ("tall", 378, 0),
    ("wide", 0, 250),
    ("wide", 253, 268),
]

SYNTHETIC_SIZE = (1023, 767)

PIL_FILTERS = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

LCG_MUL = 6364136223846793005
LCG_ADD = 1442695040888963407
MASK64 = (1 << 64) - 1


def synthetic(w, h):
    """I[y][x][c] = ((3x + 5y) // 7 + (37x + 91y + 11xy + 71c) % 61) % 256."""
    y, x, c = np.meshgrid(np.arange(h), np.arange(w), np.arange(3), indexing="ij")
    v = ((3 * x + 5 * y) // 7 + (37 * x + 91 * y + 11 * x * y + 71 * c) % 61) % 256
    return Image.fromarray(v.astype(np.uint8), "RGB")


def digest(a):
    a = np.ascontiguousarray(a)
    if a.dtype == np.float32:
        a = a.astype("<f4")
    return blake3.blake3(a.tobytes()).hexdigest()


def lcg_signs(n, seed):
    s = seed
    out = np.empty(n, dtype=np.float64)
    for i in range(n):
        s = (s * LCG_MUL + LCG_ADD) & MASK64
        out[i] = -1.0 if s >> 63 else 1.0
    return out


def samples_chw(t, count, seed):
    """`count` positions (c, y, x) and values of a CHW array, drawn with a seeded numpy RNG."""
    c, h, w = t.shape
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, c * h * w, size=count)
    out = []
    for i in idx:
        ci, rem = divmod(int(i), h * w)
        yi, xi = divmod(rem, w)
        out.append([ci, yi, xi, float(t[ci, yi, xi])])
    return out


def samples_hwc(a, count, seed):
    return [[c, y, x, v] for (c, y, x, v) in samples_chw(np.transpose(a, (2, 0, 1)), count, seed)]


def chw_stats(t, seed):
    flat = t.astype(np.float64).reshape(-1)
    return {
        "channel_sums": [float(v) for v in t.astype(np.float64).sum(axis=(1, 2))],
        "checksum_seed": seed,
        "signed_checksum": float((flat * lcg_signs(flat.size, seed)).sum()),
    }


def cmmd(im):
    """cmmd-pytorch: io_util.CMMDDataset + compute_embeddings_for_dir + embedding.embed."""
    from transformers import CLIPImageProcessor

    w, h = im.size
    side = min(w, h)
    top = (h - side) // 2
    left = (w - side) // 2
    resized = im.crop((left, top, left + side, top + side)).resize((336, 336), resample=Image.BICUBIC)
    u8 = np.asarray(resized)
    x = u8.astype(np.float32)[None] / 255.0
    t = torch.from_numpy(x.transpose(0, 3, 1, 2))
    same = torch.nn.functional.interpolate(t, size=(336, 336), mode="bicubic")
    assert torch.equal(same, t), "torch bicubic at the same size is not the identity"
    x = same.permute(0, 2, 3, 1).numpy()
    processor = CLIPImageProcessor(image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    out = processor(
        images=x,
        do_normalize=True,
        do_center_crop=False,
        do_resize=False,
        do_rescale=False,
        return_tensors="pt",
    )["pixel_values"][0].numpy()
    assert out.dtype == np.float32 and out.shape == (3, 336, 336)
    return u8, out


def csd(im):
    """CSD's transforms_branch0 (torchvision on a PIL image)."""
    geometry = transforms.Compose(
        [transforms.Resize(size=224, interpolation=InterpolationMode.BICUBIC), transforms.CenterCrop(224)]
    )
    tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])
    cropped = geometry(im)
    out = tensor(cropped).numpy()
    assert out.dtype == np.float32 and out.shape == (3, 224, 224)
    return np.asarray(cropped), out


def clean_fid(im):
    from cleanfid.resize import make_resizer

    resized = make_resizer("PIL", False, "bicubic", (299, 299))(np.array(im.convert("RGB")))
    assert resized.dtype == np.float32 and resized.shape == (299, 299, 3)
    x = torch.tensor(resized.transpose((2, 0, 1)))  # ToTensor leaves float32 arrays unscaled
    out = ((x - 128) / 128).numpy()
    return resized, out


def pytorch_fid(im):
    x = transforms.ToTensor()(im.convert("RGB"))[None]
    alt = torch.from_numpy((np.array(im)[None].astype(np.float32) / 255.0).transpose((0, 3, 1, 2)))
    assert torch.equal(x, alt), "pytorch-fid and gan-metrics-pytorch inputs differ"
    y = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
    out = (2 * y - 1)[0].numpy()
    assert out.dtype == np.float32 and out.shape == (3, 299, 299)
    return out


def recipe_cases(name, im, seed):
    cases = []
    u8, out = cmmd(im)
    cases.append(
        {
            "kind": "cmmd",
            "image": name,
            "resized_u8_blake3": digest(u8),
            "output_blake3": digest(out),
            "samples": samples_chw(out, 16, seed),
        }
    )
    u8, out = csd(im)
    cases.append(
        {
            "kind": "csd",
            "image": name,
            "resized_u8_blake3": digest(u8),
            "output_blake3": digest(out),
            "samples": samples_chw(out, 16, seed + 1),
        }
    )
    resized, out = clean_fid(im)
    cases.append(
        {
            "kind": "clean_fid",
            "image": name,
            "resized_f32_blake3": digest(resized),
            "output_blake3": digest(out),
            "samples": samples_chw(out, 16, seed + 2),
        }
    )
    out = pytorch_fid(im)
    case = {
        "kind": "pytorch_fid",
        "image": name,
        "output_blake3": digest(out),
        "samples": samples_chw(out, 256, seed + 3),
    }
    case.update(chw_stats(out, seed + 4))
    cases.append(case)
    return cases


def pil_cases(name, im, sizes, seed):
    cases = []
    for filt, code in PIL_FILTERS.items():
        for w, h in sizes:
            out = np.asarray(im.resize((w, h), resample=code))
            cases.append(
                {
                    "kind": "pil_u8",
                    "image": name,
                    "filter": filt,
                    "size": [w, h],
                    "blake3": digest(out),
                    "samples": samples_hwc(out.astype(np.float64), 8, seed),
                }
            )
            planes = []
            for c in range(3):
                plane = Image.fromarray(np.asarray(im)[:, :, c].astype(np.float32), mode="F")
                planes.append(np.asarray(plane.resize((w, h), resample=code)))
            out = np.stack(planes, axis=2)
            assert out.dtype == np.float32
            cases.append(
                {
                    "kind": "pil_f32",
                    "image": name,
                    "filter": filt,
                    "size": [w, h],
                    "blake3": digest(out),
                    "samples": samples_hwc(out, 8, seed + 1),
                }
            )
            seed += 2
    return cases


def small_cases():
    """Every filter on the small integer images of shared/reference/resize_refs.json
    (`I[y][x] = (37x + 91y + 11xy) mod 256`, 6x6 -> 4x4 and 4x4 -> 7x7), in full."""
    out = []
    for n_in, n_out in ((6, 4), (4, 7)):
        y, x = np.meshgrid(np.arange(n_in), np.arange(n_in), indexing="ij")
        a = ((37 * x + 91 * y + 11 * x * y) % 256).astype(np.uint8)
        for filt, code in PIL_FILTERS.items():
            u8 = np.asarray(Image.fromarray(a, "L").resize((n_out, n_out), resample=code))
            f = np.asarray(Image.fromarray(a.astype(np.float32), "F").resize((n_out, n_out), resample=code))
            out.append(
                {
                    "kind": "small",
                    "size": [n_in, n_out],
                    "filter": filt,
                    "u8": u8.reshape(-1).tolist(),
                    "f32": [float(v) for v in f.reshape(-1)],
                }
            )
        t = torch.from_numpy(a.astype(np.float32))[None, None]
        bl = F.interpolate(t, size=(n_out, n_out), mode="bilinear", align_corners=False)
        out.append(
            {
                "kind": "small_torch_bilinear",
                "size": [n_in, n_out],
                "f32": [float(v) for v in bl.reshape(-1)],
            }
        )
    return out


def main():
    here = Path(__file__).resolve().parent.parent
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default=str(here.parent / "shared" / "datasets"))
    ap.add_argument("--out", default=str(here / "tests" / "fixtures" / "eval" / "preprocess"))
    args = ap.parse_args()
    # torch 2.15's CPU bilinear kernel rounds differently (1-2 ulp, another FMA pattern)
    # when it runs on a single thread; record what it computes by default, multi-threaded.
    torch.set_num_threads(2)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)

    images = {}
    sources = {}
    for name, rel, box in SOURCES:
        src = Image.open(os.path.join(args.datasets, rel)).convert("RGB").crop(box)
        path = out_dir / f"{name}.png"
        src.save(path, optimize=True)
        im = Image.open(path)
        im.load()
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), np.asarray(src))
        images[name] = im
        sources[name] = {"file": f"{name}.png", "from": rel, "crop": list(box), "size": list(im.size)}

    mosaic = Image.new("RGB", MOSAIC_SIZE)
    for src, left, top in MOSAIC_PASTES:
        mosaic.paste(images[src], (left, top))
    images["mosaic"] = mosaic
    images["synthetic"] = synthetic(*SYNTHETIC_SIZE)
    images["column"] = images["tall"].crop((60, 0, 61, 256))  # 1x256
    images["row"] = images["wide"].crop((0, 80, 256, 81))  # 256x1
    images["tiny"] = images["squarish"].crop((10, 10, 13, 12))  # 3x2

    cases = small_cases()
    seed = 1
    for name, im in images.items():
        cases += recipe_cases(name, im, seed)
        seed += 10
    pil_sizes = {
        "squarish": [(97, 131), (300, 311), (229, 100)],
        "mosaic": [(336, 336), (224, 190), (512, 17)],
        "synthetic": [(299, 299), (1000, 767)],
        "tiny": [(5, 7)],
        "column": [(3, 40)],
    }
    for name, sizes in pil_sizes.items():
        cases += pil_cases(name, images[name], sizes, seed)
        seed += 100

    refs = {
        "generator": "tools/make_resize_fixtures.py",
        "versions": {
            "pillow": PIL.__version__,
            "numpy": np.__version__,
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
        },
        "sources": sources,
        "derived": {
            "mosaic": {"size": list(MOSAIC_SIZE), "pastes": [list(p) for p in MOSAIC_PASTES]},
            "synthetic": {
                "size": list(SYNTHETIC_SIZE),
                "formula": "I[y][x][c] = ((3x + 5y) // 7 + (37x + 91y + 11xy + 71c) % 61) % 256",
            },
            "column": {"of": "tall", "crop": [60, 0, 61, 256]},
            "row": {"of": "wide", "crop": [0, 80, 256, 81]},
            "tiny": {"of": "squarish", "crop": [10, 10, 13, 12]},
        },
        "cases": cases,
    }
    # One case per line: small, and diffs stay readable.
    head = json.dumps({k: v for k, v in refs.items() if k != "cases"}, indent=1)
    body = ",\n".join("  " + json.dumps(c, separators=(",", ":")) for c in cases)
    with open(out_dir / "refs.json", "w") as f:
        f.write(head[:-2] + ',\n "cases": [\n' + body + "\n ]\n}\n")
    json.load(open(out_dir / "refs.json"))
    total = sum(p.stat().st_size for p in out_dir.iterdir())
    print(f"{len(cases)} cases, {total} bytes in {out_dir}")


if __name__ == "__main__":
    main()
