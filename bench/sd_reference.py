#!/usr/bin/env python3
"""The PyTorch side of `nsync bench sd`: the same steps with diffusers / transformers.

    python bench/sd_reference.py --threads 2 [--repeats 1] [--steps-only sample|train|both]
                                 [--out FILE]

Builds the Stable Diffusion 1.5-size UNet and the CLIP ViT-L/14 text encoder from their
configurations with random initialisation (no download), in f32 on the CPU, and times

- sample: one classifier-free-guided UNet call at 512 px: latents [2, 4, 64, 64], one
  timestep per sample, context [2, 77, 768], under torch.no_grad() as diffusers'
  pipelines run it;
- train: one Textual Inversion step at 256 px: the prompt's token embeddings with one
  learned row (the only tensor with requires_grad, so PyTorch computes no gradient for a
  frozen weight, as real TI training), the text encoder, the UNet at [1, 4, 32, 32], the
  MSE against the noise (diffusers' textual_inversion.py), backward(), the row's gradient;
- train_ctoa: one NSYNC (ctoa) step at the same size: three such passes (positive, negative,
  anchor), each with its own backward, then the paper's projected update
  g_pos − proj(g_pos, g_neg) + proj(g_pos, g_anc) (nodes/src/training/update_rule.rs).

Each step runs in a fresh process (this script with --case) with torch.set_num_threads(N)
and OMP_NUM_THREADS / MKL_NUM_THREADS = N; its peak RSS is resource.getrusage's ru_maxrss.
The first call is a discarded warm-up when it takes under 30 s, otherwise it counts as the
first repeat (the rule of the nsync side). Prints one JSON document; the field names are
those `nsync bench sd --reference-json FILE` reads.
"""

import argparse
import importlib.metadata
import json
import os
import resource
import subprocess
import sys
import time

WARMUP_UNDER_S = 30.0
LEARNED_ID = 49408  # one past CLIP's vocabulary, as TI adds its placeholder token

# The same configurations as src/commands/bench/sd_cases.rs.
UNET_CONFIG = dict(
    sample_size=64,
    in_channels=4,
    out_channels=4,
    block_out_channels=(320, 640, 1280, 1280),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    cross_attention_dim=768,
    attention_head_dim=8,
    norm_num_groups=32,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    act_fn="silu",
    downsample_padding=1,
    use_linear_projection=False,
    center_input_sample=False,
)
CLIP_CONFIG = dict(
    vocab_size=49408,
    hidden_size=768,
    intermediate_size=3072,
    num_hidden_layers=12,
    num_attention_heads=12,
    max_position_embeddings=77,
    hidden_act="quick_gelu",
    layer_norm_eps=1e-5,
    bos_token_id=49406,
    eos_token_id=49407,
    pad_token_id=49407,
)


def prompt_ids():
    """"a painting in the style of <token>", then end-of-text padding to 77 tokens."""
    ids = [49406, 320, 3086, 530, 518, 2480, 539, LEARNED_ID]
    return ids + [49407] * (77 - len(ids))


def status_kib(key):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def measure(r, repeats, step):
    """Fill r's timing fields from `step()` -> (total, forward, backward, check)."""
    what = r["case"]
    print(f"  {what}: first call…", file=sys.stderr, flush=True)
    first = step()
    r["first_s"] = first[0]
    r["warmup"] = first[0] < WARMUP_UNDER_S
    runs = []
    if r["warmup"]:
        print(f"  {what}: first call {first[0]:.2f} s (warm-up, not counted)", file=sys.stderr, flush=True)
    else:
        print(f"  {what}: first call {first[0]:.2f} s (counted)", file=sys.stderr, flush=True)
        runs.append(first)
    while len(runs) < max(repeats, 1):
        run = step()
        print(f"  {what}: {run[0]:.2f} s", file=sys.stderr, flush=True)
        runs.append(run)
    best = min(runs, key=lambda x: x[0])
    r["times_s"] = [x[0] for x in runs]
    r["best_s"] = best[0]
    r["forward_s"] = best[1]
    r["backward_s"] = best[2]
    r["check"] = best[3]


def params(m):
    return sum(p.numel() for p in m.parameters())


def run_case(case, threads, repeats):
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler, UNet2DConditionModel

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    r = {"case": case, "threads": torch.get_num_threads()}
    t = time.perf_counter()
    print("  initialising the SD 1.5 UNet…", file=sys.stderr, flush=True)
    unet = UNet2DConditionModel(**UNET_CONFIG).requires_grad_(False)
    r["attn_processor"] = type(next(iter(unet.attn_processors.values()))).__name__

    if case == "sample":
        unet.eval()
        r["params"] = params(unet)
        r["build_s"] = time.perf_counter() - t
        r["rss_model_kib"] = status_kib("VmRSS")
        latents = torch.randn(2, 4, 64, 64)
        timesteps = torch.tensor([500, 500])
        context = torch.randn(2, 77, 768)

        def step():
            t = time.perf_counter()
            with torch.no_grad():
                out = unet(latents, timesteps, encoder_hidden_states=context).sample
            total = time.perf_counter() - t
            assert out.shape == (2, 4, 64, 64), out.shape
            return total, None, None, out.abs().mean().item()

        measure(r, repeats, step)
    else:
        from transformers import CLIPTextConfig, CLIPTextModel

        print("  initialising the CLIP text encoder…", file=sys.stderr, flush=True)
        te = CLIPTextModel(CLIPTextConfig(**CLIP_CONFIG)).requires_grad_(False)
        r["params"] = params(unet) + params(te)
        # textual_inversion.py trains with text_encoder.train(); dropout is 0 in both models.
        te.train()
        unet.train()

        class WithLearnedRow(torch.nn.Module):
            """The frozen token table, with LEARNED_ID's row a trainable parameter."""

            def __init__(self, table, row):
                super().__init__()
                self.table = table
                self.row = torch.nn.Parameter(row.clone())

            def forward(self, ids):
                mask = ids == LEARNED_ID
                x = self.table(torch.where(mask, torch.zeros_like(ids), ids))
                return torch.where(mask.unsqueeze(-1), self.row.to(x.dtype), x)

        # transformers < 5 nests the embeddings under `text_model`.
        embeddings = getattr(te, "text_model", te).embeddings
        table = embeddings.token_embedding
        learned = WithLearnedRow(table, table.weight[3086].detach())  # from "painting"
        embeddings.token_embedding = learned
        r["build_s"] = time.perf_counter() - t
        r["rss_model_kib"] = status_kib("VmRSS")
        scheduler = DDPMScheduler(
            num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear"
        )
        # Positive, negative and anchor images (latents) with their noise; TI uses only the
        # first.
        passes = 1 if case == "train" else 3
        data = [(torch.randn(1, 4, 32, 32), torch.randn(1, 4, 32, 32)) for _ in range(passes)]
        timesteps = torch.tensor([500])
        ids = torch.tensor([prompt_ids()])

        def step():
            t = time.perf_counter()
            forward, grads = 0.0, []
            for latents, noise in data:
                f = time.perf_counter()
                noisy = scheduler.add_noise(latents, noise, timesteps)
                context = te(ids)[0]
                pred = unet(noisy, timesteps, context).sample
                loss = F.mse_loss(pred.float(), noise.float(), reduction="mean")
                forward += time.perf_counter() - f
                loss.backward()
                g = learned.row.grad
                assert g is not None, "no gradient reached the learned row"
                grads.append(g.detach().flatten().double().clone())
                learned.row.grad = None
            assert all(p.grad is None for p in unet.parameters()), "a frozen UNet weight got a gradient"
            if passes == 1:
                update = grads[0]
            else:
                a, b, c = grads

                def coef(x, y):
                    yy = torch.dot(y, y).item()
                    return 0.0 if yy == 0.0 else torch.dot(x, y).item() / yy

                update = (a - coef(a, b) * b + coef(a, c) * c).float()
            total = time.perf_counter() - t
            return total, forward, total - forward, update.norm().item()

        measure(r, repeats, step)
    r["peak_rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r


def version(pkg):
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--steps-only", choices=["sample", "train", "both"], default="both")
    ap.add_argument("--out", help="write the JSON here as well as to stdout")
    ap.add_argument("--case", choices=["sample", "train", "train_ctoa"], help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.threads < 1 or a.repeats < 1:
        ap.error("--threads and --repeats must be at least 1")

    if a.case:
        print(json.dumps(run_case(a.case, a.threads, a.repeats)), flush=True)
        return

    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    cases = {"sample": ["sample"], "train": ["train", "train_ctoa"], "both": ["sample", "train", "train_ctoa"]}[
        a.steps_only
    ]
    doc = {
        "side": "pytorch",
        "threads": a.threads,
        "versions": {
            "python": sys.version.split()[0],
            "torch": version("torch"),
            "diffusers": version("diffusers"),
            "transformers": version("transformers"),
        },
        "cases": {},
    }
    for case in cases:  # one after the other, each in a fresh process
        print(f"PyTorch, {case} step, {a.threads} thread(s)…", file=sys.stderr, flush=True)
        t = time.perf_counter()
        p = subprocess.run(
            [sys.executable, os.path.abspath(__file__), "--case", case,
             "--threads", str(a.threads), "--repeats", str(a.repeats)],
            env=env, stdout=subprocess.PIPE, text=True,
        )
        lines = p.stdout.strip().splitlines()
        if p.returncode != 0 or not lines:
            doc["cases"][case] = {"error": f"exit status {p.returncode}"}
            print(f"warning: the PyTorch {case} step failed (exit status {p.returncode})", file=sys.stderr)
            continue
        doc["cases"][case] = json.loads(lines[-1])
        print(f"  done in {time.perf_counter() - t:.1f} s (process)", file=sys.stderr, flush=True)
    text = json.dumps(doc, indent=2)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
