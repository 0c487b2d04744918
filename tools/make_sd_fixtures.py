#!/usr/bin/env python3
"""Generate tiny random-weight Stable Diffusion models and reference fixtures.

Dev-only tool (CI never runs it). It builds, for one variant (``sd15`` or
``sd2``), a complete diffusers-layout pipeline with tiny random weights and a
tiny CLIP BPE tokenizer cut from the real CLIP merges, then records what
diffusers/transformers compute with it, so the Rust implementation can prove
parity without Python:

    DIR/model/                 StableDiffusionPipeline.save_pretrained(..., safe_serialization=True)
    DIR/fixtures.safetensors   reference tensors (all f32, contiguous)
    DIR/fixtures.json          everything else; every tensor named with shape and provenance

Usage:
    python tools/make_sd_fixtures.py --variant sd15 --seed 0 --out tests/fixtures/sd/sd15
    python tools/make_sd_fixtures.py --variant sd2  --seed 0 --out tests/fixtures/sd/sd2

The same arguments give byte-identical files (CPU, 1 thread, deterministic
algorithms, explicit generators for every random tensor). The script reloads
the saved folder with StableDiffusionPipeline.from_pretrained and checks that
the guided sample is reproduced exactly; it exits non-zero otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gzip
import importlib.metadata
import importlib.util
import json
import os
import platform
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    EulerAncestralDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
CAPTION_GLOB = "pipelines/data/*/*/*.txt"
VAE_IMAGE = "pipelines/data/monet/train/000c1e3bff.jpg"
NUM_MERGES = 4000
MAX_LEN = 77
PLACEHOLDER = "<monet>"

# The scheduler_config.json of runwayml/stable-diffusion-v1-5 and of
# stabilityai/stable-diffusion-2 (768-v), minus the "_" keys.
SCHEDULER_CONFIGS = {
    "sd15": (
        PNDMScheduler,
        {
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "clip_sample": False,
            "num_train_timesteps": 1000,
            "set_alpha_to_one": False,
            "skip_prk_steps": True,
            "steps_offset": 1,
            "trained_betas": None,
        },
    ),
    "sd2": (
        DDIMScheduler,
        {
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "beta_start": 0.00085,
            "clip_sample": False,
            "num_train_timesteps": 1000,
            "prediction_type": "v_prediction",
            "set_alpha_to_one": False,
            "skip_prk_steps": True,
            "steps_offset": 1,
            "trained_betas": None,
        },
    ),
}

TRICKY_STRINGS = [
    "a painting of a harbour at dawn",
    "A PAINTING OF A HARBOUR AT DAWN",
    "A Painting Of A Harbour At Dawn, By Claude MONET (1872)",
    "wow!!! what... a view?! (really) -- yes;; ok?!?!",
    "don't it's we'll they're I'm you've he'd",
    "DON'T IT'S WE'LL",
    "don\u2019t it\u2019s we\u2019ll (curly apostrophes)",
    "1872 3.5 10,000 2nd 1/2 007",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m",
    "cafe\u0301 nai\u0308ve (combining accents, NFC-normalised)",
    "\u00dcN\u00cfC\u00d6D\u00c9 STRA\u00dfE \u0130stanbul",
    "\u6771\u4eac\u306e\u591c",
    "a night in \u6771\u4eac with neon signs",
    "a cat \U0001f431 on a \U0001f680 at night \U0001f303",
    "family \U0001f468\u200d\U0001f469\u200d\U0001f467 and flag \U0001f1eb\U0001f1f7",
    "tabs\tand\nnewlines\r\n  and   multiple    spaces",
    "   leading and trailing spaces   ",
    "non\u00a0breaking and zero\u200bwidth spaces",
    "fish &amp; chips &lt;b&gt; &#39;quoted&#39; &quot;x&quot;",
    "\ufb01ne ligature, \u00bd \u00b2 \u2167 \u0663 numerals",
    "@user #hashtag $100 50% a+b=c snake_case hyphen-ated/slash\\back",
    "<|startoftext|>hello world<|endoftext|>",
    "an oil painting, trending on artstation, 8k, highly detailed, by greg rutkowski",
    " ".join(["a very long caption about water lilies, bridges and light"] * 12),
    "",
    "a painting in the style of <monet>",
    "<monet>",
    "<Monet> sunrise over the <MONET> harbour",
    "x<monet>y and <monet>s and <monet>, <monet>.",
]


def sha_versions() -> dict:
    def v(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "tokenizers": v("tokenizers"),
        "safetensors": v("safetensors"),
        "numpy": np.__version__,
        "pillow": v("pillow"),
        "open_clip_torch": v("open_clip_torch"),
        "ftfy": v("ftfy"),
    }


# ----------------------------------------------------------------- tokenizer
def bytes_to_unicode() -> dict[int, str]:
    """CLIP's (and GPT-2's) reversible byte -> printable unicode char map."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("\u00a1"), ord("\u00ac") + 1))
        + list(range(ord("\u00ae"), ord("\u00ff") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_bpe_path() -> Path:
    # Located without importing open_clip (whose import needs ftfy/timm/torchvision).
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("open_clip_torch is needed for bpe_simple_vocab_16e6.txt.gz: "
                 "pip install --no-deps open_clip_torch==3.3.0 (see tools/README.md)")
    return Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"


def build_vocab_and_merges(num_merges: int):
    """Exactly clip.simple_tokenizer.SimpleTokenizer.__init__, cut at num_merges."""
    lines = gzip.open(clip_bpe_path()).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 1 + num_merges]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab.extend("".join(m) for m in merges)
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    encoder = {tok: i for i, tok in enumerate(vocab)}
    assert len(encoder) == len(vocab), "duplicate vocab entries"
    return encoder, merges, lines[0]


def make_tokenizer(encoder, merges, pad_token) -> CLIPTokenizer:
    return CLIPTokenizer(
        vocab=dict(encoder),
        merges=list(merges),
        pad_token=pad_token,
        model_max_length=MAX_LEN,
    )


def write_slow_tokenizer_files(tok_dir: Path, encoder, merges, pad_token) -> None:
    """transformers 5 saves tokenizer.json + tokenizer_config.json only; the hub SD
    repos (and any Rust loader) use vocab.json + merges.txt + special_tokens_map.json."""
    with open(tok_dir / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(encoder, f, ensure_ascii=False, indent=2, sort_keys=False)
        f.write("\n")
    with open(tok_dir / "merges.txt", "w", encoding="utf-8", newline="\n") as f:
        f.write("#version: 0.2\n")
        for a, b in merges:
            f.write(f"{a} {b}\n")

    def added(content):
        return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}

    special = {
        "bos_token": added("<|startoftext|>"),
        "eos_token": added("<|endoftext|>"),
        "pad_token": pad_token,
        "unk_token": added("<|endoftext|>"),
    }
    with open(tok_dir / "special_tokens_map.json", "w", encoding="utf-8") as f:
        json.dump(special, f, indent=2)
        f.write("\n")


def corpus() -> list[tuple[str, str]]:
    out = []
    for p in sorted(REPO.glob(CAPTION_GLOB)):
        text = p.read_text(encoding="utf-8").strip()
        out.append((str(p.relative_to(REPO)), text))
    for i, s in enumerate(TRICKY_STRINGS):
        out.append((f"tricky[{i}]", s))
    return out


def tokenize_corpus(tok: CLIPTokenizer, items) -> list[dict]:
    rows = []
    for source, text in items:
        padded = tok(text, padding="max_length", max_length=MAX_LEN, truncation=True).input_ids
        unpadded = tok(text).input_ids
        assert len(padded) == MAX_LEN
        rows.append(
            {
                "source": source,
                "text": text,
                "ids_padded": padded,
                "ids": unpadded,
                "tokens": tok.convert_ids_to_tokens(unpadded),
            }
        )
    return rows


# -------------------------------------------------------------------- models
def build_models(variant: str, vocab_size: int, bos: int, eos: int, pad: int):
    sd2 = variant == "sd2"
    te_cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        max_position_embeddings=MAX_LEN,
        hidden_act="gelu" if sd2 else "quick_gelu",
        projection_dim=32,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=pad,
    )
    text_encoder = CLIPTextModel(te_cfg).eval()
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=32,
        attention_head_dim=(2, 4) if sd2 else 8,
        use_linear_projection=sd2,
    ).eval()
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(32, 32, 64, 64),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=32,
        sample_size=64,
        scaling_factor=0.18215,
    ).eval()
    cls, cfg = SCHEDULER_CONFIGS[variant]
    scheduler = cls.from_config(cfg)
    return text_encoder, unet, vae, scheduler


# ------------------------------------------------------------------ recording
class Fixtures:
    def __init__(self):
        self.tensors: dict[str, torch.Tensor] = {}
        self.index: dict[str, dict] = {}

    def add(self, name: str, t, produced_by: str, **extra) -> torch.Tensor:
        if name in self.tensors:
            raise KeyError(f"duplicate fixture {name}")
        if isinstance(t, np.ndarray):
            t = torch.from_numpy(t)
        t = t.detach().to("cpu", torch.float32).contiguous().clone()
        self.tensors[name] = t
        entry = {"shape": list(t.shape), "dtype": "F32", "produced_by": produced_by}
        entry.update(extra)
        self.index[name] = entry
        return t


def gen(seed: int, salt: int) -> torch.Generator:
    return torch.Generator("cpu").manual_seed(seed * 1000 + salt)


NOISE_MODULES = [
    "diffusers.utils.torch_utils",
    "diffusers.schedulers.scheduling_euler_ancestral_discrete",
    "diffusers.schedulers.scheduling_ddpm",
    "diffusers.schedulers.scheduling_ddim",
    "diffusers.models.autoencoders.vae",
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion",
]


@contextlib.contextmanager
def capture_randn():
    """Record every tensor diffusers draws through randn_tensor. Each module does
    `from ..utils.torch_utils import randn_tensor`, so each module's own binding
    must be patched (patching diffusers.utils.torch_utils alone catches nothing)."""
    drawn: list[torch.Tensor] = []
    saved = []
    for mod_name in NOISE_MODULES:
        mod = sys.modules[mod_name] if mod_name in sys.modules else importlib.import_module(mod_name)
        orig = mod.randn_tensor

        def wrapper(*args, __orig=orig, **kwargs):
            out = __orig(*args, **kwargs)
            drawn.append(out.detach().clone())
            return out

        saved.append((mod, orig))
        mod.randn_tensor = wrapper
    try:
        yield drawn
    finally:
        for mod, orig in saved:
            mod.randn_tensor = orig


def ts_list(timesteps: torch.Tensor) -> list:
    if timesteps.dtype.is_floating_point:
        return [float(x) for x in timesteps.tolist()]
    return [int(x) for x in timesteps.tolist()]


def load_image() -> tuple[torch.Tensor, dict]:
    img = Image.open(REPO / VAE_IMAGE).convert("RGB")
    orig_size = list(img.size)
    img = img.resize((64, 64), resample=Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    t = torch.from_numpy(arr).permute(2, 0, 1).unsqueeze(0).contiguous()
    return t, {"path": VAE_IMAGE, "original_size": orig_size}


# ---------------------------------------------------------------------- main
def run(variant: str, seed: int, out: Path) -> None:
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)

    sd2 = variant == "sd2"
    pad_token = "!" if sd2 else "<|endoftext|>"
    fx = Fixtures()
    meta: dict = {
        "generator": "tools/make_sd_fixtures.py",
        "command": f"python tools/make_sd_fixtures.py --variant {variant} --seed {seed} --out <DIR>",
        "variant": variant,
        "seed": seed,
        "versions": sha_versions(),
        "determinism": "CPU, torch.set_num_threads(1), torch.use_deterministic_algorithms(True); "
        "global torch.manual_seed(seed) before building models (module init order: text_encoder, unet, vae); "
        "every fixture input drawn from its own torch.Generator('cpu').manual_seed(seed*1000+salt)",
        "random_inputs": "torch.randn(shape, generator=torch.Generator('cpu').manual_seed(seed*1000+salt)); "
        "they are saved, so consumers never need to reproduce torch's RNG",
    }

    # ---------------------------------------------------------------- tokenizer
    encoder, merges, header = build_vocab_and_merges(NUM_MERGES)
    tokenizer = make_tokenizer(encoder, merges, pad_token)
    vocab_size = len(tokenizer)
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id
    assert vocab_size == 512 + NUM_MERGES + 2

    # ------------------------------------------------------------------- models
    torch.manual_seed(seed)
    text_encoder, unet, vae, scheduler = build_models(variant, vocab_size, bos, eos, pad)
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)

    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    model_dir = out / "model"
    pipe.save_pretrained(model_dir, safe_serialization=True)
    tok_dir = model_dir / "tokenizer"
    hf5_tokenizer_json = tok_dir / "tokenizer.json"
    shutil.move(hf5_tokenizer_json, out / "tokenizer.transformers5.json")
    write_slow_tokenizer_files(tok_dir, encoder, merges, pad_token)

    meta["model"] = {
        "dir": "model",
        "saved_with": "StableDiffusionPipeline(vae, text_encoder, tokenizer, unet, scheduler, safety_checker=None, "
        "feature_extractor=None, image_encoder=None, requires_safety_checker=False)"
        ".save_pretrained(DIR/model, safe_serialization=True)",
        "tokenizer_files": "model/tokenizer/tokenizer_config.json is what transformers 5 CLIPTokenizer.save_pretrained "
        "writes; transformers 5 writes no vocab.json/merges.txt/special_tokens_map.json, so the script writes them in "
        "the layout of the hub SD repos and moves transformers' tokenizer.json to tokenizer.transformers5.json "
        "(reference only: shows the normalizer/pre-tokenizer transformers 5 uses). from_pretrained rebuilds the "
        "tokenizer from vocab.json + merges.txt; the script checks it gives identical ids.",
        "text_encoder": {k: text_encoder.config.to_dict()[k] for k in (
            "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings", "hidden_act", "layer_norm_eps", "bos_token_id", "eos_token_id",
            "pad_token_id")},
        "text_encoder_attn_implementation": text_encoder.config._attn_implementation,
        "unet_attention_head_dim": list(unet.config.attention_head_dim)
        if isinstance(unet.config.attention_head_dim, (list, tuple)) else unet.config.attention_head_dim,
        "unet_attention_head_dim_note": "diffusers' UNet2DConditionModel treats attention_head_dim as the NUMBER of "
        "heads per block (num_attention_heads defaults to it); the mid block uses the last entry",
        "vae_scale_factor": pipe.vae_scale_factor,
        "scheduler_class": type(scheduler).__name__,
        "scheduler_config": {k: v for k, v in scheduler.config.items() if not k.startswith("_")},
        "num_parameters": {
            "text_encoder": sum(p.numel() for p in text_encoder.parameters()),
            "unet": sum(p.numel() for p in unet.parameters()),
            "vae": sum(p.numel() for p in vae.parameters()),
        },
    }

    # --------------------------------------------------------- (a) tokenizer
    items = corpus()
    assert len(items) >= 40, len(items)
    rows_before = tokenize_corpus(tokenizer, items)
    tok_added = make_tokenizer(encoder, merges, pad_token)
    n_added = tok_added.add_tokens([PLACEHOLDER])
    assert n_added == 1
    placeholder_id = tok_added.convert_tokens_to_ids(PLACEHOLDER)
    rows_after = tokenize_corpus(tok_added, items)
    meta["tokenizer"] = {
        "class": f"transformers.{type(tokenizer).__name__} (transformers {transformers.__version__})",
        "kind": "transformers 5 has no slow (pure-Python) CLIPTokenizer any more: CLIPTokenizer is the "
        "tokenizers-backed class (CLIPTokenizerFast is gone/aliased) and ftfy is never consulted",
        "cleaning_path": "tokenizers normalizer Sequence[NFC, Replace(/\\s+/ -> ' '), Lowercase]; then pre-tokenizer "
        "Split(/<\\|startoftext\\|>|<\\|endoftext\\|>|'s|'t|'re|'ve|'m|'ll|'d|[\\p{L}]+|[\\p{N}]|[^\\s\\p{L}\\p{N}]+/, "
        "removed, invert) + ByteLevel(add_prefix_space=False); BPE with end_of_word_suffix '</w>'; "
        "RobertaProcessing adds <|startoftext|> ... <|endoftext|>. No ftfy, no html.unescape, no BasicTokenizer "
        "(CJK chars are NOT split apart, control chars are NOT stripped)",
        "ftfy_installed": importlib.util.find_spec("ftfy") is not None,
        "differences_from_legacy_tokenizers": "checked once by hand against transformers 4.57.6 on this corpus: "
        "CLIPTokenizerFast 4.57.6 gives identical ids for every string; the slow 4.x CLIPTokenizer without ftfy "
        "(BasicTokenizer path) differs on CJK (each ideograph becomes its own word), on format/control chars such "
        "as U+200B/U+200D (removed, joining the neighbours), and on added tokens (matched case-sensitively, so "
        "'<Monet>' is not the placeholder there). The original openai CLIP (ftfy + html.unescape) would further "
        "turn '&amp;' into '&' and curly apostrophes into ASCII ones. These fixtures follow transformers 5.",
        "merges_source": "open_clip/bpe_simple_vocab_16e6.txt.gz (open_clip_torch), header line "
        + repr(header),
        "num_merges": NUM_MERGES,
        "vocab_construction": "list(bytes_to_unicode().values()) (256) + same with '</w>' (256) + ''.join(merge) for "
        "the first num_merges merges (lines[1:1+num_merges]) + ['<|startoftext|>', '<|endoftext|>']",
        "vocab_size": vocab_size,
        "bos_token": "<|startoftext|>",
        "bos_token_id": bos,
        "eos_token": "<|endoftext|>",
        "eos_token_id": eos,
        "unk_token": "<|endoftext|>",
        "pad_token": pad_token,
        "pad_token_id": pad,
        "model_max_length": tokenizer.model_max_length,
        "call_padded": "tokenizer(text, padding='max_length', max_length=77, truncation=True).input_ids",
        "call_unpadded": "tokenizer(text).input_ids",
        "truncation_note": "with truncation the specials are kept: 75 text tokens + bos + eos",
        "placeholder": PLACEHOLDER,
        "placeholder_call": f"tokenizer.add_tokens([{PLACEHOLDER!r}])",
        "placeholder_id": placeholder_id,
        "placeholder_added_token": str(tok_added.added_tokens_decoder[placeholder_id]),
        "corpus_size": len(items),
        "corpus": rows_before,
        "corpus_with_placeholder": rows_after,
    }

    # ------------------------------------------------------ (b) text encoder
    te_prompts = ["a painting of a harbour at dawn", ""]
    te_ids = tokenizer(te_prompts, padding="max_length", max_length=MAX_LEN, truncation=True,
                       return_tensors="pt").input_ids
    with torch.no_grad():
        te_out = text_encoder(te_ids)[0]
    fx.add("te_last_hidden_state", te_out,
           "text_encoder(tokenizer(prompts, padding='max_length', max_length=77, truncation=True, "
           "return_tensors='pt').input_ids)[0]  # last_hidden_state, no attention_mask (as the pipeline)",
           prompts=te_prompts)

    ti_prompt = "a painting in the style of <monet>"
    te_inj = copy.deepcopy(text_encoder).eval()  # deep copy: resize_token_embeddings edits the config
    tok_inj = make_tokenizer(encoder, merges, pad_token)
    tok_inj.add_tokens([PLACEHOLDER])
    te_inj.resize_token_embeddings(len(tok_inj))
    learned = torch.randn((1, 32), generator=gen(seed, 1))
    with torch.no_grad():
        te_inj.get_input_embeddings().weight[placeholder_id] = learned[0]
    inj_ids = tok_inj(ti_prompt, padding="max_length", max_length=MAX_LEN, truncation=True,
                      return_tensors="pt").input_ids
    with torch.no_grad():
        inj_out = te_inj(inj_ids)[0]
    fx.add("learned_embedding", learned, "torch.randn((1, 32), generator=gen(seed, 1)); written into row "
           "placeholder_id of text_encoder.get_input_embeddings().weight after tokenizer.add_tokens(['<monet>']) "
           "and text_encoder.resize_token_embeddings(len(tokenizer))")
    fx.add("te_injected_last_hidden_state", inj_out,
           "text_encoder_with_learned_embedding(tokenizer_with_<monet>(prompt, padding='max_length', "
           "max_length=77, truncation=True).input_ids)[0]", prompt=ti_prompt)
    meta["text_encoder"] = {
        "prompts": te_prompts,
        "input_ids": te_ids.tolist(),
        "injected_prompt": ti_prompt,
        "injected_input_ids": inj_ids.tolist(),
        "placeholder_id": placeholder_id,
        "resized_vocab_size": te_inj.config.vocab_size,
    }

    # --------------------------------------------------------------- (c) UNet
    unet_latents = torch.randn((2, 4, 8, 8), generator=gen(seed, 2))
    unet_t = torch.tensor([10, 600], dtype=torch.int64)
    with torch.no_grad():
        unet_out = unet(unet_latents, unet_t, encoder_hidden_states=te_out).sample
    fx.add("unet_latents", unet_latents, "torch.randn((2, 4, 8, 8), generator=gen(seed, 2))")
    fx.add("unet_timesteps", unet_t.float(), "torch.tensor([10, 600], dtype=torch.int64) (stored here as f32)")
    fx.add("unet_out", unet_out,
           "unet(unet_latents, torch.tensor([10, 600]), encoder_hidden_states=te_last_hidden_state).sample")
    meta["unet"] = {"timesteps": [10, 600], "timesteps_dtype": "int64",
                    "encoder_hidden_states": "te_last_hidden_state (batch of 2)"}

    # ---------------------------------------------------------------- (d) VAE
    image, img_info = load_image()
    fx.add("vae_image", image, "PIL.Image.open(path).convert('RGB').resize((64, 64), Image.BICUBIC) -> "
           "float32 / 127.5 - 1 -> NCHW", **img_info)
    with torch.no_grad(), capture_randn() as drawn:
        dist = vae.encode(image).latent_dist
        vae_sample = dist.sample(generator=gen(seed, 3))
    assert len(drawn) == 1
    vae_noise = drawn[0]
    assert torch.equal(vae_sample, dist.mean + dist.std * vae_noise)
    fx.add("vae_mean", dist.mean, "vae.encode(vae_image).latent_dist.mean")
    fx.add("vae_std", dist.std, "vae.encode(vae_image).latent_dist.std == exp(0.5 * clamp(logvar, -30, 20)) "
           "(logvar = second half of quant_conv output channels)")
    fx.add("vae_noise", vae_noise, "noise drawn by latent_dist.sample(generator=gen(seed, 3)) (captured "
           "randn_tensor output)")
    fx.add("vae_sample", vae_sample, "latent_dist.sample(generator) == mean + std * vae_noise (unscaled; "
           "multiply by scaling_factor 0.18215 for the UNet)")
    dec_latents = torch.randn((1, 4, 8, 8), generator=gen(seed, 4))
    with torch.no_grad():
        dec_img = vae.decode(dec_latents).sample
    fx.add("vae_decode_latents", dec_latents, "torch.randn((1, 4, 8, 8), generator=gen(seed, 4))")
    fx.add("vae_decoded", dec_img, "vae.decode(vae_decode_latents).sample  # raw, no /scaling_factor, no clamp")
    meta["vae"] = {"scaling_factor": vae.config.scaling_factor,
                   "decode_note": "vae.decode does not divide by scaling_factor; the pipeline does "
                   "vae.decode(latents / scaling_factor) then (x / 2 + 0.5).clamp(0, 1)"}

    # --------------------------------------------------------- (e) schedulers
    sched_mo = torch.randn((1, 4, 8, 8), generator=gen(seed, 5))
    sched_x = torch.randn((1, 4, 8, 8), generator=gen(seed, 6))
    fx.add("sched_model_output", sched_mo, "torch.randn((1, 4, 8, 8), generator=gen(seed, 5))")
    fx.add("sched_sample", sched_x, "torch.randn((1, 4, 8, 8), generator=gen(seed, 6))")
    base_cfg = dict(scheduler.config)
    sched_meta: dict = {"base_config": "pipe.scheduler.config (+ timestep_spacing override)",
                        "prediction_type": getattr(scheduler.config, "prediction_type", "epsilon"),
                        "num_inference_steps": 10, "runs": {}}
    classes = [("ddim", DDIMScheduler), ("pndm", PNDMScheduler), ("ddpm", DDPMScheduler),
               ("euler_a", EulerAncestralDiscreteScheduler)]
    for salt_base, (name, cls) in enumerate(classes):
        for j, spacing in enumerate(("leading", "trailing", "linspace")):
            s = cls.from_config(base_cfg, timestep_spacing=spacing)
            s.set_timesteps(10)
            t0 = s.timesteps[0]
            key = f"sched_{name}_{spacing}"
            run_meta = {
                "class": cls.__name__,
                "prediction_type": s.config.prediction_type,
                "timestep_spacing": spacing,
                "timesteps": ts_list(s.timesteps),
                "timesteps_dtype": str(s.timesteps.dtype).replace("torch.", ""),
                "init_noise_sigma": float(s.init_noise_sigma),
                "first_timestep": ts_list(t0.reshape(1))[0],
            }
            g = gen(seed, 100 + 10 * salt_base + j)
            with capture_randn() as drawn:
                if name == "euler_a":
                    scaled = s.scale_model_input(sched_x, t0)
                    fx.add(f"{key}_scaled_input", scaled, f"{cls.__name__}.from_config(cfg, timestep_spacing="
                           f"{spacing!r}); set_timesteps(10); scale_model_input(sched_sample, timesteps[0])")
                    prev = s.step(sched_mo, t0, sched_x, generator=g).prev_sample
                    run_meta["sigmas"] = [float(x) for x in s.sigmas.tolist()]
                    call = "step(sched_model_output, timesteps[0], sched_sample, generator=g).prev_sample"
                elif name == "ddim":
                    prev = s.step(sched_mo, t0, sched_x, eta=0.0).prev_sample
                    call = "step(sched_model_output, timesteps[0], sched_sample, eta=0.0).prev_sample"
                elif name == "ddpm":
                    prev = s.step(sched_mo, t0, sched_x, generator=g).prev_sample
                    call = "step(sched_model_output, timesteps[0], sched_sample, generator=g).prev_sample"
                else:
                    prev = s.step(sched_mo, t0, sched_x).prev_sample
                    call = "step(sched_model_output, timesteps[0], sched_sample).prev_sample (first PLMS step)"
            fx.add(f"{key}_prev_sample", prev, f"{cls.__name__}.from_config(cfg, timestep_spacing={spacing!r}); "
                   f"set_timesteps(10); {call}")
            run_meta["step_call"] = call
            if drawn:
                assert len(drawn) == 1, (key, len(drawn))
                fx.add(f"{key}_noise", drawn[0], f"noise drawn inside {cls.__name__}.step via randn_tensor "
                       f"(generator=gen(seed, {100 + 10 * salt_base + j}))")
                run_meta["noise"] = f"{key}_noise"
            sched_meta["runs"][key] = run_meta

    ddpm = DDPMScheduler.from_config(base_cfg)
    fx.add("sched_alphas_cumprod", ddpm.alphas_cumprod,
           "DDPMScheduler.from_config(pipe.scheduler.config).alphas_cumprod (f32, 1000)")
    an_x0 = torch.randn((3, 4, 8, 8), generator=gen(seed, 7))
    an_noise = torch.randn((3, 4, 8, 8), generator=gen(seed, 8))
    an_t = torch.tensor([0, 500, 999], dtype=torch.int64)
    fx.add("add_noise_x0", an_x0, "torch.randn((3, 4, 8, 8), generator=gen(seed, 7))")
    fx.add("add_noise_noise", an_noise, "torch.randn((3, 4, 8, 8), generator=gen(seed, 8))")
    fx.add("add_noise_out", ddpm.add_noise(an_x0, an_noise, an_t),
           "DDPMScheduler.from_config(cfg).add_noise(add_noise_x0, add_noise_noise, torch.tensor([0, 500, 999]))")
    fx.add("velocity_out", ddpm.get_velocity(an_x0, an_noise, an_t),
           "DDPMScheduler.from_config(cfg).get_velocity(add_noise_x0, add_noise_noise, torch.tensor([0, 500, 999]))"
           " == sqrt(acp)*noise - sqrt(1-acp)*x0")
    sched_meta["add_noise_timesteps"] = [0, 500, 999]
    meta["schedulers"] = sched_meta

    # ------------------------------------------------- (f) full guided sample
    sample_prompt = "a harbour at dawn in the style of painting"
    sample_neg = "blurry"
    init_latents = torch.randn((1, 4, 8, 8), generator=gen(seed, 9))
    fx.add("sample_init_latents", init_latents, "torch.randn((1, 4, 8, 8), generator=gen(seed, 9))")
    sample_kwargs = dict(prompt=sample_prompt, negative_prompt=sample_neg, num_inference_steps=5,
                        guidance_scale=7.5, height=64, width=64)

    def sample(p, output_type):
        steps: list[torch.Tensor] = []
        tsteps: list = []

        def cb(_pipe, i, t, kw):
            steps.append(kw["latents"].detach().clone())
            tsteps.append(t.item())
            return kw

        with torch.no_grad(), capture_randn() as drawn:
            res = p(**sample_kwargs, latents=init_latents.clone(), output_type=output_type,
                    callback_on_step_end=cb, callback_on_step_end_tensor_inputs=["latents"]).images
        assert not drawn, "pipeline drew noise; fixture would not be reproducible from saved tensors"
        if isinstance(res, np.ndarray):
            res = torch.from_numpy(res.copy())
        return res, torch.stack(steps), tsteps

    image_np, step_latents, used_ts = sample(pipe, "np")
    final_latents, _, _ = sample(pipe, "latent")
    with torch.no_grad():
        pe, npe = pipe.encode_prompt(sample_prompt, "cpu", 1, True, sample_neg)
    fx.add("sample_prompt_embeds", pe, "pipe.encode_prompt(prompt, 'cpu', 1, True, negative_prompt)[0]")
    fx.add("sample_negative_prompt_embeds", npe, "pipe.encode_prompt(prompt, 'cpu', 1, True, negative_prompt)[1]")
    fx.add("sample_step_latents", step_latents, "latents after each scheduler.step, captured by "
           "callback_on_step_end (stacked: [num_timesteps, 1, 4, 8, 8])")
    fx.add("sample_image", image_np, "pipe(**sample_call, latents=sample_init_latents, output_type='np').images "
           "(NHWC in [0,1])")
    fx.add("sample_final_latents", final_latents, "pipe(**sample_call, latents=sample_init_latents, "
           "output_type='latent').images (unscaled: decode as vae.decode(x / 0.18215))")
    meta["sample"] = {
        "call": "pipe(prompt=..., negative_prompt=..., num_inference_steps=5, guidance_scale=7.5, height=64, "
        "width=64, latents=sample_init_latents, output_type='np'|'latent')",
        **sample_kwargs,
        "scheduler": type(pipe.scheduler).__name__,
        "timesteps_used": used_ts,
        "num_unet_calls": len(used_ts),
        "init_noise_sigma": float(pipe.scheduler.init_noise_sigma),
        "guidance": "noise_pred = uncond + 7.5 * (cond - uncond); batch = [negative, positive]",
        "negative_prompt_ids": tokenizer(sample_neg, padding="max_length", max_length=MAX_LEN,
                                         truncation=True).input_ids,
        "prompt_ids": tokenizer(sample_prompt, padding="max_length", max_length=MAX_LEN,
                                truncation=True).input_ids,
    }

    # -------------------------------------------- (g) textual-inversion loss
    te_ti = copy.deepcopy(text_encoder).eval()
    tok_ti = make_tokenizer(encoder, merges, pad_token)
    tok_ti.add_tokens([PLACEHOLDER])
    te_ti.resize_token_embeddings(len(tok_ti))
    init_ids = tok_ti.encode("painting", add_special_tokens=False)
    init_id = init_ids[0]
    emb = te_ti.get_input_embeddings()
    with torch.no_grad():
        emb.weight[placeholder_id] = emb.weight[init_id].clone()
    te_ti.requires_grad_(False)
    emb.weight.requires_grad_(True)
    ti_ids = tok_ti(ti_prompt, padding="max_length", max_length=MAX_LEN, truncation=True,
                    return_tensors="pt").input_ids
    with torch.no_grad():
        ti_latents = (dist.mean + dist.std * vae_noise) * vae.config.scaling_factor
    ti_noise = torch.randn((1, 4, 8, 8), generator=gen(seed, 10))
    ti_t = torch.tensor([500], dtype=torch.int64)
    noise_sched = DDPMScheduler.from_config(base_cfg)
    ti_noisy = noise_sched.add_noise(ti_latents, ti_noise, ti_t)
    if noise_sched.config.prediction_type == "epsilon":
        target = ti_noise
        target_call = "noise"
    else:
        target = noise_sched.get_velocity(ti_latents, ti_noise, ti_t)
        target_call = "noise_scheduler.get_velocity(latents, noise, t)"
    unet.requires_grad_(False)
    vae.requires_grad_(False)
    ehs = te_ti(ti_ids)[0]
    model_pred = unet(ti_noisy, ti_t, ehs).sample
    loss = F.mse_loss(model_pred.float(), target.float(), reduction="mean")
    loss.backward()
    grad_row = emb.weight.grad[placeholder_id]
    other_rows = torch.cat([emb.weight.grad[:placeholder_id], emb.weight.grad[placeholder_id + 1:]])
    fx.add("ti_init_embedding", emb.weight[placeholder_id].detach(),
           f"text_encoder.get_input_embeddings().weight[{init_id}] (first sub-token of 'painting') copied into "
           "row placeholder_id")
    fx.add("ti_latents", ti_latents, "(vae_mean + vae_std * vae_noise) * 0.18215")
    fx.add("ti_noise", ti_noise, "torch.randn((1, 4, 8, 8), generator=gen(seed, 10))")
    fx.add("ti_noisy_latents", ti_noisy, "DDPMScheduler.from_config(pipe.scheduler.config).add_noise(ti_latents, "
           "ti_noise, torch.tensor([500]))")
    fx.add("ti_target", target, target_call)
    fx.add("ti_encoder_hidden_states", ehs, "text_encoder(ids of 'a painting in the style of <monet>')[0]")
    fx.add("ti_model_pred", model_pred, "unet(ti_noisy_latents, torch.tensor([500]), ti_encoder_hidden_states).sample")
    fx.add("ti_loss", loss.reshape(1), "F.mse_loss(model_pred.float(), target.float(), reduction='mean') "
           "(0-d, stored as shape [1])")
    fx.add("ti_grad", grad_row, "d ti_loss / d text_encoder.get_input_embeddings().weight[placeholder_id] "
           "(only the embedding matrix requires grad)")
    meta["textual_inversion"] = {
        "prompt": ti_prompt,
        "input_ids": ti_ids.tolist(),
        "placeholder_id": placeholder_id,
        "init_token": "painting",
        "init_token_ids": init_ids,
        "timestep": 500,
        "prediction_type": noise_sched.config.prediction_type,
        "target": target_call,
        "loss": float(loss.item()),
        "grad_rows_other_than_placeholder_nonzero": bool(other_rows.abs().sum().item() != 0),
        "grad_rows_note": "the gradient also flows into the other token rows used by the prompt; "
        "textual-inversion training zeroes/restores those, the fixture records only the placeholder row",
        "call": "tokenizer.add_tokens(['<monet>']); text_encoder.resize_token_embeddings(len(tokenizer)); "
        "weight[placeholder_id] = weight[first id of 'painting']; freeze all but the token-embedding weight; "
        "noisy = DDPMScheduler.from_config(pipe.scheduler.config).add_noise(latents, noise, t); "
        "loss = F.mse_loss(unet(noisy, t, text_encoder(ids)[0]).sample.float(), target.float(), reduction='mean'); "
        "loss.backward()",
    }

    # --------------------------------------------------- reload and recheck
    reloaded = StableDiffusionPipeline.from_pretrained(model_dir)
    reloaded.set_progress_bar_config(disable=True)
    assert type(reloaded.scheduler) is type(pipe.scheduler)
    assert type(reloaded.tokenizer).__name__ == "CLIPTokenizer"
    re_rows = tokenize_corpus(reloaded.tokenizer, items)
    assert re_rows == rows_before, "reloaded tokenizer (vocab.json + merges.txt) gives different ids"
    assert reloaded.tokenizer.model_max_length == MAX_LEN
    assert reloaded.tokenizer.pad_token == pad_token
    re_image, re_steps, _ = sample(reloaded, "np")
    re_latents, _, _ = sample(reloaded, "latent")
    assert torch.equal(re_image, image_np), "reloaded pipeline image differs"
    assert torch.equal(re_latents, final_latents), "reloaded pipeline latents differ"
    assert torch.equal(re_steps, step_latents)
    meta["reload_check"] = ("StableDiffusionPipeline.from_pretrained(DIR/model) reproduces sample_image, "
                            "sample_final_latents and sample_step_latents bit-exactly and the tokenizer ids "
                            "of the whole corpus")

    # -------------------------------------------------------------- write
    meta["tensors"] = fx.index
    save_file(fx.tensors, str(out / "fixtures.safetensors"))
    with open(out / "fixtures.json", "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=1, ensure_ascii=False)
        f.write("\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", required=True, choices=sorted(SCHEDULER_CONFIGS))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, type=Path)
    args = ap.parse_args()
    torch.set_num_interop_threads(1)
    if importlib.util.find_spec("ftfy") is not None:
        print("warning: ftfy is installed; transformers 5 ignores it, but the fixtures are meant to be made "
              "without it", file=sys.stderr)
    run(args.variant, args.seed, args.out)
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    print(f"wrote {args.out} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
