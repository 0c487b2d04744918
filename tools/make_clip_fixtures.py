#!/usr/bin/env python3
"""Reference fixtures for the two CLIP image feature extractors of the evaluator.

Dev-only tool (CI never runs it). Versions used for the committed fixtures:
Python 3.11, torch 2.15.0 (CPU), transformers 5.24.0, open_clip_torch 3.3.0 (installed
with --no-deps; only ``open_clip.transformer`` is imported, see ``open_clip_vit``),
torchvision 0.29.2, numpy 2.4.6, Pillow 13.0.0, safetensors 0.8.0.

It builds two random-weight models, runs them on three real paintings and writes, under
``--out DIR``:

    DIR/clip_vision/config.json         a tiny *full* ``CLIPModel`` (vision 32 wide, 4
    DIR/clip_vision/model.safetensors   heads, 2 layers, 336 px, patch 14, quick_gelu,
                                        projection 32; a 1-layer text tower that the Rust
                                        loader must ignore), as ``save_pretrained`` writes
                                        it, weights stored as float16
    DIR/csd/checkpoint.pth              a tiny CSD (OpenAI CLIP ViT at 224 px, patch 14,
                                        width 64 = 1 head, 2 layers, QuickGELU, style head
                                        64x32), saved like the authors' training script:
                                        ``torch.save({"model_state_dict": {"module.…": …},
                                        "iter": …, "args": Namespace(…)})``, float16
    DIR/csd/model.safetensors           the same ``module.…`` tensors as safetensors
    DIR/inputs/{clip336,csd224}_<i>.png the preprocessed 8-bit images (see below)
    DIR/fixtures.safetensors            reference outputs, float32
    DIR/fixtures.json                   provenance: configs, images, versions, every
                                        tensor with its shape and the call that made it

The weights are drawn in float32, rounded to float16 and stored as float16 (to keep the
committed files small); every reference output is computed in float32 from exactly those
values, so the Rust side (which converts the file to float32) sees the same model.

Preprocessing (``shared/docs/metrics.md``): CMMD's CLIP input is a centre crop to a square
then PIL bicubic to 336 on the 8-bit image; CSD's is torchvision ``Resize(224, BICUBIC)``
+ ``CenterCrop(224)`` on the PIL image. Both are stored as lossless PNG, so the Rust tests
do not depend on the resize code; the tests apply ``/255`` and the CLIP mean/std exactly as
torchvision's ``ToTensor`` + ``Normalize`` do (float32 divide, subtract, divide).

Models used as references:
- ``transformers.CLIPVisionModelWithProjection.from_pretrained(DIR/clip_vision)`` (it
  reports the text tower as unexpected and nothing missing; the script checks that), output
  ``F.normalize(image_embeds)``; and the same weights with ``hidden_act="gelu"``.
- CSD: open_clip's ``VisionTransformer`` (OpenAI CLIP naming, ``QuickGELU``) with ``proj``
  removed as ``CSD_CLIP`` does (learn2phoenix/CSD, CSD/model.py), then
  ``F.normalize(feature @ last_layer_style)``. The script reloads the ``.pth`` the way the
  authors' ``main_sim.py`` does (``torch.load`` → ``model_state_dict`` → strip ``module.``)
  but with ``strict=True``, and the safetensors copy, and checks both reproduce the outputs.

Usage (from the repository root):

    python tools/make_clip_fixtures.py --out tests/fixtures/eval/clip

Full-size check (dev only, ~2.5 GB of random weights, a few minutes): ``--full DIR`` writes
the same layout with the real architectures (ViT-L/14-336 as ``CLIPVisionModelWithProjection``
with a ``CLIPVisionConfig``; CSD ViT-L/14-224, width 1024, 24 layers, style 1024x768),
float32, and then

    NSYNC_CLIP_FIXTURES=DIR cargo test --release -p nsync-nodes --test clip_vision_parity

runs every parity test on it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import sys
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchvision.transforms.functional as TF  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402
from torch import nn  # noqa: E402
from transformers import (  # noqa: E402
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModelWithProjection,
)

REPO = Path(__file__).resolve().parent.parent
PAINTINGS = [
    "monet/test/d4116437bb.jpg",
    "vangogh/test/00437.jpg",
    "monet/test/d50049fbfc.jpg",
]
CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

TINY_CLIP = dict(
    hidden_size=32,
    intermediate_size=128,
    projection_dim=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    image_size=336,
    patch_size=14,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
# The vision_config of openai/clip-vit-large-patch14-336 (its config.json).
FULL_CLIP = dict(
    hidden_size=1024,
    intermediate_size=4096,
    projection_dim=768,
    num_hidden_layers=24,
    num_attention_heads=16,
    image_size=336,
    patch_size=14,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
)
TINY_TEXT = dict(
    vocab_size=64,
    hidden_size=16,
    intermediate_size=32,
    num_hidden_layers=1,
    num_attention_heads=2,
    max_position_embeddings=8,
    projection_dim=32,
    bos_token_id=0,
    eos_token_id=1,
    pad_token_id=1,
)
# OpenAI CLIP ViT-L/14 (224 px) visual tower as CSD uses it: heads = width // 64.
TINY_CSD = dict(image_size=224, patch_size=14, width=64, layers=2, style_dim=32)
FULL_CSD = dict(image_size=224, patch_size=14, width=1024, layers=24, style_dim=768)


def open_clip_vit():
    """open_clip's VisionTransformer and QuickGELU without running open_clip/__init__.py
    (which imports ftfy for its tokenizer; the dev venv deliberately has no ftfy)."""
    if "open_clip" not in sys.modules:
        spec = importlib.util.find_spec("open_clip")
        pkg = types.ModuleType("open_clip")
        pkg.__path__ = list(spec.submodule_search_locations)
        sys.modules["open_clip"] = pkg
    from open_clip.transformer import QuickGELU, VisionTransformer

    return VisionTransformer, QuickGELU


class CsdReference(nn.Module):
    """The inference path of ``CSD_CLIP`` (learn2phoenix/CSD, CSD/model.py): the OpenAI
    CLIP visual tower with ``proj`` set to None, ``last_layer_style`` and
    ``last_layer_content`` copies of the projection, style = normalize(feature @ style)."""

    def __init__(self, image_size, patch_size, width, layers, style_dim):
        super().__init__()
        VisionTransformer, QuickGELU = open_clip_vit()
        self.backbone = VisionTransformer(
            image_size=image_size,
            patch_size=patch_size,
            width=width,
            layers=layers,
            heads=width // 64,
            mlp_ratio=4.0,
            output_dim=style_dim,
            act_layer=QuickGELU,
        )
        self.last_layer_style = nn.Parameter(self.backbone.proj.detach().clone())
        self.last_layer_content = nn.Parameter(self.backbone.proj.detach().clone())
        self.backbone.proj = None

    def forward(self, x):
        feature = self.backbone(x)
        style = F.normalize(feature @ self.last_layer_style, dim=1, p=2)
        return feature, style


def randomise(model: nn.Module, gen: torch.Generator, f16: bool) -> None:
    """Every parameter drawn from `gen`: norms 1 + 0.1·N, biases 0.05·N, embeddings 0.5·N,
    matrices N/sqrt(fan_in). Rounded to float16 values when `f16`."""
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            n = torch.randn(p.shape, generator=gen, dtype=torch.float32)
            leaf = name.rsplit(".", 1)[-1]
            is_norm = any(s in name for s in ("norm", "ln_", "layrnorm"))
            if is_norm and leaf == "weight":
                v = 1.0 + 0.1 * n
            elif leaf.endswith("bias"):
                v = 0.05 * n
            elif "embedding" in name or p.dim() == 1:
                v = 0.5 * n
            else:
                fan_in = int(np.prod(p.shape[1:]))
                if name.endswith("last_layer_style") or name.endswith("last_layer_content"):
                    fan_in = p.shape[0]
                v = n / fan_in**0.5
            if f16:
                v = v.half().float()
            p.copy_(v)


def clip_pixels(path: Path, size: int) -> np.ndarray:
    """CMMD's input: centre crop to a square, PIL bicubic to `size`, 8-bit."""
    im = Image.open(path).convert("RGB")
    w, h = im.size
    side = min(w, h)
    top, left = (h - side) // 2, (w - side) // 2
    im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.BICUBIC)
    return np.asarray(im)


def csd_pixels(path: Path, size: int) -> np.ndarray:
    """CSD's input: torchvision Resize(size, BICUBIC) + CenterCrop(size) on the PIL image."""
    im = Image.open(path).convert("RGB")
    im = TF.resize(im, size, interpolation=TF.InterpolationMode.BICUBIC)
    return np.asarray(TF.center_crop(im, size))


def normalise(pixels: list[np.ndarray]) -> torch.Tensor:
    """ToTensor + Normalize(CLIP mean, std), float32, [N, 3, S, S]."""
    x = torch.stack([torch.from_numpy(p.copy()).permute(2, 0, 1) for p in pixels])
    x = x.float().div(255)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return x.sub(mean).div(std)


def save_png(path: Path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path, format="PNG", optimize=True)
    back = np.asarray(Image.open(path).convert("RGB"))
    assert np.array_equal(back, pixels), path


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("torch", "transformers", "open_clip_torch", "torchvision", "numpy", "pillow", "safetensors"):
        out[pkg] = importlib.metadata.version(pkg)
    return out


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_clip(out: Path, cfg: dict, full: bool, gen: torch.Generator, x: torch.Tensor, record: dict):
    """The CLIP vision tower: save, reload with transformers, run."""
    d = out / "clip_vision"
    d.mkdir(parents=True)
    if full:
        # A CLIPVisionModelWithProjection with its CLIPVisionConfig; transformers' own init.
        torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
        model = CLIPVisionModelWithProjection(CLIPVisionConfig(**cfg)).eval()
        model.save_pretrained(d)
    else:
        # A full CLIPModel (what the hub checkpoint is), tiny text tower included.
        config = CLIPConfig(
            text_config=TINY_TEXT, vision_config=cfg, projection_dim=cfg["projection_dim"]
        )
        full_model = CLIPModel(config).eval()
        randomise(full_model, gen, f16=True)
        full_model.to(torch.float16).save_pretrained(d)
    model, info = CLIPVisionModelWithProjection.from_pretrained(
        d, dtype=torch.float32, output_loading_info=True
    )
    model.eval()
    assert not info["missing_keys"] and not info["mismatched_keys"], info
    assert all(
        k.startswith(("text_model.", "text_projection.")) or k == "logit_scale"
        for k in info["unexpected_keys"]
    ), info["unexpected_keys"]
    with torch.no_grad():
        o = model(pixel_values=x)
        embeds = F.normalize(o.image_embeds, dim=-1)
        pooled = o.last_hidden_state[:, 0, :]
        cfg_gelu = CLIPVisionConfig(**{**cfg, "hidden_act": "gelu"})
        gelu = CLIPVisionModelWithProjection(cfg_gelu).eval()
        gelu.load_state_dict(model.state_dict())
        embeds_gelu = F.normalize(gelu(pixel_values=x).image_embeds, dim=-1)
        if not full:
            # The whole CLIPModel gives the same image features.
            whole = CLIPModel.from_pretrained(d, dtype=torch.float32).eval()
            feats = whole.get_image_features(pixel_values=x)
            feats = getattr(feats, "pooler_output", feats)
            assert torch.allclose(F.normalize(feats, dim=-1), embeds, atol=1e-6)
    record["clip_vision"] = {
        "config": cfg,
        "dir": "clip_vision",
        "layout": "CLIPVisionModelWithProjection" if full else "CLIPModel (text tower included)",
        "weights_dtype": "float32" if full else "float16",
    }
    return {
        "clip_embeds": (embeds, "F.normalize(CLIPVisionModelWithProjection(...)(pixel_values=clip336).image_embeds, dim=-1)"),
        "clip_embeds_gelu": (embeds_gelu, "the same weights with hidden_act='gelu' (exact erf GELU)"),
        "clip_last_hidden_cls": (pooled, "last_hidden_state[:, 0] (before post_layernorm)"),
    }


def make_csd(out: Path, cfg: dict, full: bool, gen: torch.Generator, x: torch.Tensor, record: dict):
    d = out / "csd"
    d.mkdir(parents=True)
    torch.manual_seed(int(torch.randint(0, 2**31, (1,), generator=gen)))
    model = CsdReference(**cfg).eval()
    if not full:
        randomise(model, gen, f16=True)
    else:
        with torch.no_grad():
            w = model.last_layer_style
            w.copy_(torch.randn(w.shape, generator=gen) / w.shape[0] ** 0.5)
    dtype = torch.float32 if full else torch.float16
    state = {"module." + k: v.detach().to(dtype).contiguous() for k, v in model.state_dict().items()}
    assert "module.backbone.proj" not in state
    pth = d / "checkpoint.pth"
    torch.save(
        {
            "model_state_dict": state,
            "iter": 1,
            "args": argparse.Namespace(arch="vit_large", content_proj_head="default", lr=3e-4),
        },
        pth,
    )
    save_file(state, str(d / "model.safetensors"))
    with torch.no_grad():
        feature, style = model(x)
        # Reload like main_sim.py (but strict) and check both files give the same outputs.
        for name, sd in (
            ("pth", torch.load(pth, map_location="cpu", weights_only=False)["model_state_dict"]),
            ("safetensors", load_file(str(d / "model.safetensors"))),
        ):
            fresh = CsdReference(**cfg).eval()
            fresh.load_state_dict({k.removeprefix("module."): v.float() for k, v in sd.items()}, strict=True)
            f2, s2 = fresh(x)
            assert torch.equal(f2, feature) and torch.equal(s2, style), name
    record["csd"] = {
        "config": cfg,
        "heads": cfg["width"] // 64,
        "files": ["csd/checkpoint.pth", "csd/model.safetensors"],
        "weights_dtype": str(dtype).removeprefix("torch."),
        "pickle": "torch.save({'model_state_dict': {'module.<name>': tensor}, 'iter': 1, 'args': argparse.Namespace(...)}) (zip format)",
    }
    return {
        "csd_style": (style, "F.normalize(backbone(csd224) @ last_layer_style, dim=1)"),
        "csd_feature": (feature, "backbone(csd224): ln_post(CLS), projection removed"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="fixture folder (replaced)")
    ap.add_argument("--full", type=Path, help="write full-size random models here instead")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--datasets", type=Path, default=REPO.parent / "shared" / "datasets")
    a = ap.parse_args()
    if (a.out is None) == (a.full is None):
        ap.error("give exactly one of --out DIR or --full DIR")
    full = a.full is not None
    out = a.full if full else a.out
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    if out.exists():
        shutil.rmtree(out)
    (out / "inputs").mkdir(parents=True)

    clip_cfg, csd_cfg = (FULL_CLIP, FULL_CSD) if full else (TINY_CLIP, TINY_CSD)
    clip_px, csd_px, images = [], [], []
    for i, rel in enumerate(PAINTINGS):
        src = a.datasets / rel
        c = clip_pixels(src, clip_cfg["image_size"])
        s = csd_pixels(src, csd_cfg["image_size"])
        save_png(out / "inputs" / f"clip336_{i}.png", c)
        save_png(out / "inputs" / f"csd224_{i}.png", s)
        clip_px.append(c)
        csd_px.append(s)
        images.append({"source": f"shared/datasets/{rel}", "sha256": sha256(src)})

    gen = torch.Generator().manual_seed(a.seed)
    record = {
        "seed": a.seed,
        "full_size": full,
        "versions": versions(),
        "images": images,
        "inputs": {
            "clip336_<i>.png": "centre crop to square, PIL bicubic to 336, 8-bit RGB",
            "csd224_<i>.png": "torchvision Resize(224, BICUBIC) + CenterCrop(224), 8-bit RGB",
            "normalisation": "x.float().div(255).sub(mean).div(std) (torchvision ToTensor + Normalize)",
            "mean": CLIP_MEAN,
            "std": CLIP_STD,
        },
    }
    tensors = {}
    tensors.update(make_clip(out, clip_cfg, full, gen, normalise(clip_px), record))
    tensors.update(make_csd(out, csd_cfg, full, gen, normalise(csd_px), record))
    record["tensors"] = {k: {"shape": list(t.shape), "made_by": how} for k, (t, how) in sorted(tensors.items())}
    save_file({k: t.float().contiguous() for k, (t, _) in tensors.items()}, str(out / "fixtures.safetensors"))
    (out / "fixtures.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
