#!/usr/bin/env python3
"""Dev-only: check that LoRA weights written by `contrastive_train` (`adapter = "lora"`) load
in diffusers' `load_lora_weights` and compute what nsync computes, and that a LoRA saved by
diffusers from a PEFT-adapted UNet loads in nsync; write the fixtures that
`nodes/tests/lora.rs::the_unet_with_a_lora_matches_diffusers` checks without Python.

    python tools/check_lora_loads.py            # writes tests/fixtures/lora/
    python tools/check_lora_loads.py --check    # compare only, write nothing

Stages:
1. `NSYNC_WRITE_LORA=<dir> cargo test -p nsync-nodes --test lora -- --ignored --exact
   write_lora_fixture`: the real trainer trains LoRA adapters (rank 4, alpha 6, so the
   scale 1.5 is baked into `lora_B`) for 3 CTOA steps on the tiny SD 1.x fixture model and
   writes them (`ours.safetensors`, diffusers' layout) with fixed UNet inputs
   (`inputs.safetensors`: `sample` [2, 4, 8, 8], `timesteps` [2], `context` [2, 77, 32]) and
   nsync's own UNet outputs for them (`nsync_output.safetensors`: `base`, `ours`).
2. diffusers: `StableDiffusionPipeline.from_pretrained(tests/fixtures/sd/sd15/model)`, the
   UNet on those inputs without a LoRA (`base`), after `pipe.load_lora_weights(ours)`
   (`ours`); then a LoRA made by diffusers itself: `unet.add_adapter(LoraConfig(r=4,
   lora_alpha=8, init_lora_weights="gaussian", target_modules=[to_q, to_k, to_v,
   to_out.0]))` with seeded non-zero `lora_B`, saved by `save_lora_weights` with its
   `unet_lora_adapter_metadata` (`peft.safetensors`), reloaded into a fresh pipeline with
   `load_lora_weights` (`peft`).
3. Asserts: nsync's outputs equal diffusers' within 1e-4 (max abs), and each LoRA moves the
   output by far more than that. Writes `reference.safetensors` (diffusers' `base`, `ours`,
   `peft`) and `reference.json` (versions and the measured errors).

Needs the dev venv of tools/README.md plus `peft` (`pip install peft --no-deps`, and
`accelerate --no-deps`, which peft imports).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import diffusers  # noqa: E402
import peft  # noqa: E402
from diffusers import StableDiffusionPipeline  # noqa: E402
from peft import LoraConfig  # noqa: E402
from peft.utils import get_peft_model_state_dict  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MODEL = REPO / "tests/fixtures/sd/sd15/model"
OUT = REPO / "tests/fixtures/lora"
TOL = 1e-4


def pipeline() -> StableDiffusionPipeline:
    pipe = StableDiffusionPipeline.from_pretrained(MODEL, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def unet_out(pipe: StableDiffusionPipeline, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    return pipe.unet(
        inputs["sample"], inputs["timesteps"], encoder_hidden_states=inputs["context"]
    ).sample.contiguous()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--check", action="store_true", help="compare only; write nothing")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    work = Path(tempfile.mkdtemp(prefix="nsync-lora-"))
    subprocess.run(
        ["cargo", "test", "-q", "-p", "nsync-nodes", "--test", "lora", "--",
         "--ignored", "--exact", "write_lora_fixture"],
        cwd=REPO, check=True, env={**os.environ, "NSYNC_WRITE_LORA": str(work)},
    )
    inputs = load_file(work / "inputs.safetensors")
    nsync = load_file(work / "nsync_output.safetensors")

    pipe = pipeline()
    base = unet_out(pipe, inputs)
    pipe.load_lora_weights(str(work / "ours.safetensors"))
    ours = unet_out(pipe, inputs)
    n_layers = len(load_file(work / "ours.safetensors")) // 2

    # A LoRA diffusers makes and saves, alpha != rank recorded in its metadata.
    maker = pipeline()
    cfg = LoraConfig(r=4, lora_alpha=8, init_lora_weights="gaussian",
                     target_modules=["to_q", "to_k", "to_v", "to_out.0"])
    maker.unet.add_adapter(cfg)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in maker.unet.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    peft_direct = unet_out(maker, inputs)
    StableDiffusionPipeline.save_lora_weights(
        str(work), unet_lora_layers=get_peft_model_state_dict(maker.unet),
        unet_lora_adapter_metadata=cfg.to_dict(), weight_name="peft.safetensors",
    )
    fresh = pipeline()
    fresh.load_lora_weights(str(work / "peft.safetensors"))
    peft_out = unet_out(fresh, inputs)
    assert torch.allclose(peft_out, peft_direct, atol=1e-6), "diffusers' own round trip"

    errors = {
        "base": (nsync["base"] - base).abs().max().item(),
        "ours": (nsync["ours"] - ours).abs().max().item(),
    }
    effects = {
        "ours": (ours - base).abs().max().item(),
        "peft": (peft_out - base).abs().max().item(),
    }
    print(f"LoRA layers in ours.safetensors: {n_layers}")
    print(f"nsync vs diffusers, max abs error: no LoRA {errors['base']:.3e}, "
          f"with nsync's LoRA {errors['ours']:.3e} (the LoRA moves the output by "
          f"{effects['ours']:.3e})")
    print(f"diffusers-made LoRA (alpha 8, r 4) moves the output by {effects['peft']:.3e}; "
          "nsync's side is checked by `cargo test -p nsync-nodes --test lora`")
    for k, e in errors.items():
        assert e <= TOL, f"{k}: {e} > {TOL}"
    for k, e in effects.items():
        assert e > 100 * TOL, f"{k}: the LoRA barely matters ({e})"

    if args.check:
        shutil.rmtree(work)
        return
    OUT.mkdir(parents=True, exist_ok=True)
    for f in ["ours.safetensors", "peft.safetensors", "inputs.safetensors"]:
        shutil.copyfile(work / f, OUT / f)
    save_file({"base": base, "ours": ours, "peft": peft_out}, OUT / "reference.safetensors")
    os.chmod(OUT / "reference.safetensors", 0o644)  # safetensors writes 0600
    meta = {
        "made_by": "tools/check_lora_loads.py",
        "versions": {"torch": torch.__version__, "diffusers": diffusers.__version__,
                     "peft": peft.__version__},
        "model": str(MODEL.relative_to(REPO)),
        "ours": "nsync contrastive_train adapter=lora, rank 4, alpha 6, 3 ctoa steps (scale baked into lora_B)",
        "peft": "diffusers save_lora_weights of a PEFT LoraConfig(r=4, lora_alpha=8, gaussian init, lora_B ~ 0.1*N(0,1) seed 1) with unet_lora_adapter_metadata",
        "max_abs_error_nsync_vs_diffusers": errors,
        "max_abs_effect_of_the_lora": effects,
    }
    (OUT / "reference.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    shutil.rmtree(work)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    sys.exit(main())
