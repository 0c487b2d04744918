#!/usr/bin/env python3
"""Reference fixtures for the Inception v3 feature extractor (FID / KID).

Dev-only tool (CI never runs it). Written with, and the committed fixtures made by:

    torch 2.15.0 (CPU), torchvision 0.29.2, pytorch-fid 0.3.0, scipy 1.17.1 (pytorch-fid's
    import), numpy 2.4.6, pillow 13.0.0, safetensors 0.8.0
    pip install --no-deps torchvision==0.29.2 pytorch-fid==0.3.0 scipy==1.17.1

The full network has ~24M parameters (too big to commit), so both languages build the
same random weights from a seed with the generator below (also in
`nodes/src/evaluation/inception/random.rs`):

    per tensor `name`, element i (0-based, row-major):
      base = (seed * 0x9E3779B97F4A7C15 mod 2^64) XOR fnv1a64(utf8(name))
      z    = base + (i + 1) * 0x9E3779B97F4A7C15            (mod 2^64)
      z    = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9; z = (z ^ (z >> 27)) * 0x94D049BB133111EB
      z    = z ^ (z >> 31)                                  (splitmix64's finaliser)
      u    = (z >> 11) * 2^-53                              (float64 in [0, 1))
    value (float64, then rounded to float32) by the tensor's name:
      *.running_var   0.75 + 0.5 u          *.running_mean  0.2 (2u - 1)
      *.bn.weight     0.8 + 0.4 u           *.bn.bias       0.2 (2u - 1)
      other 1-D (fc.bias)                   0.1 (2u - 1)
      conv / fc weights (>= 2-D)            sqrt(6 / fan_in) (2u - 1), fan_in = prod(shape[1:])
      *.num_batches_tracked                 0 (int64, unused)

Then it runs the reference code itself on a few real paintings:

- `pytorch_fid.inception.InceptionV3(output_blocks=[0, 1, 2, 3])` with
  `use_fid_inception=True` (the FID network: pytorch-fid's FIDInceptionA/C/E_1/E_2 patches
  of torchvision's Inception3 with 1008 classes) and with `use_fid_inception=False`
  (torchvision's `inception_v3(weights="DEFAULT")`: plain blocks, AuxLogits, 1000 classes).
  Nothing is downloaded: the two `load_state_dict_from_url` functions are replaced by ones
  that check the URL and return the generated state dict (loaded with strict=True by the
  reference code itself);
- pytorch-fid's preprocessing: PIL `convert("RGB")`, `ToTensor()` (/255), bilinear resize to
  299x299 (`align_corners=False`, no antialias), `2x - 1` — all inside `InceptionV3.forward`.

Outputs, in --out (default tests/fixtures/eval/inception):

    fixtures.safetensors  images_u8 [N,3,H,W] (the decoded RGB8 pixels), the resized input's
                          row/column sums (float64) and a corner crop, and per variant
                          (`fid`, `torchvision`) the block outputs: blockK_mean = spatial mean
                          per channel of pytorch-fid's blocks 0-2 ([N,64], [N,192], [N,768])
                          and features = block 3 ([N,2048])
    fixtures.json         seed, versions, images, URLs, and per variant every state-dict
                          tensor's shape and float64 sum (checks the Rust generator and names)
    pth/                  tiny PyTorch pickles for the loader: zip and legacy formats, a nested
                          checkpoint ({"model_state_dict": ...}), a 2017-style legacy file
                          (`_rebuild_tensor`, Python 2 string opcodes); expected.safetensors

Usage (from the repository root):
    python tools/make_inception_fixtures.py [--seed 0] [--out tests/fixtures/eval/inception]
        [--write-pth DIR]   # also write the full random checkpoints as .pth (legacy + zip)
                            # and .safetensors, for loading tests outside CI

Deterministic: CPU, one thread, deterministic algorithms; the same arguments give the same
fixtures.safetensors, fixtures.json and expected.safetensors, byte for byte. The .pth files
hold the same tensors every time but not the same bytes (torch.save names storages after
memory addresses in the legacy format and writes a random serialization id in the zip one).
"""

from __future__ import annotations

import argparse
import copyreg
import importlib.metadata
import io
import json
import math
import os
import pickle
import pickletools
import struct
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

import torchvision  # noqa: E402
import torchvision.models._api as tv_api  # noqa: E402
import torchvision.transforms.functional as TF  # noqa: E402
import pytorch_fid.inception as fid_inception  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"
IMAGES = [
    "monet/test/d4116437bb.jpg",
    "monet/test/d50049fbfc.jpg",
    "vangogh/test/00437.jpg",
]
TORCHVISION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
FID_URL = fid_inception.FID_WEIGHTS_URL

MASK = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & MASK
    return h


def uniform(seed: int, name: str, n: int) -> np.ndarray:
    """n float64 values in [0, 1): splitmix64 over a counter, keyed by seed and name."""
    base = ((seed * GOLDEN) & MASK) ^ fnv1a64(name.encode("utf-8"))
    with np.errstate(over="ignore"):
        i = np.arange(1, n + 1, dtype=np.uint64)
        z = np.uint64(base) + i * np.uint64(GOLDEN)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (2.0**-53)


def random_tensor(seed: int, name: str, shape: tuple[int, ...]) -> torch.Tensor:
    if name.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    n = int(np.prod(shape)) if shape else 1
    u = uniform(seed, name, n)
    if name.endswith(".running_var"):
        v = 0.75 + 0.5 * u
    elif name.endswith(".running_mean"):
        v = 0.2 * (2.0 * u - 1.0)
    elif name.endswith(".bn.weight"):
        v = 0.8 + 0.4 * u
    elif name.endswith(".bn.bias"):
        v = 0.2 * (2.0 * u - 1.0)
    elif len(shape) >= 2:
        fan_in = int(np.prod(shape[1:]))
        v = math.sqrt(6.0 / fan_in) * (2.0 * u - 1.0)
    else:
        v = 0.1 * (2.0 * u - 1.0)
    return torch.from_numpy(v.astype(np.float32).reshape(shape))


def random_state_dict(skeleton: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    return {k: random_tensor(seed, k, tuple(v.shape)) for k, v in skeleton.state_dict().items()}


def fid_skeleton() -> torch.nn.Module:
    """pytorch-fid's `fid_inception_v3()` without the download (same modules, same names)."""
    inception = fid_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    inception.Mixed_5b = fid_inception.FIDInceptionA(192, pool_features=32)
    inception.Mixed_5c = fid_inception.FIDInceptionA(256, pool_features=64)
    inception.Mixed_5d = fid_inception.FIDInceptionA(288, pool_features=64)
    inception.Mixed_6b = fid_inception.FIDInceptionC(768, channels_7x7=128)
    inception.Mixed_6c = fid_inception.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6d = fid_inception.FIDInceptionC(768, channels_7x7=160)
    inception.Mixed_6e = fid_inception.FIDInceptionC(768, channels_7x7=192)
    inception.Mixed_7b = fid_inception.FIDInceptionE_1(1280)
    inception.Mixed_7c = fid_inception.FIDInceptionE_2(2048)
    return inception


def torchvision_skeleton() -> torch.nn.Module:
    """torchvision's `inception_v3(weights=DEFAULT)` architecture: AuxLogits, 1000 classes."""
    return torchvision.models.Inception3(num_classes=1000, aux_logits=True, init_weights=False)


def reference_model(variant: str, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """pytorch-fid's own InceptionV3 wrapper, fed `state` instead of the downloaded file."""
    expected_url = FID_URL if variant == "fid" else TORCHVISION_URL

    def fake_load(url, *args, **kwargs):
        assert url == expected_url, url
        return {k: v.clone() for k, v in state.items()}

    saved = (fid_inception.load_state_dict_from_url, tv_api.load_state_dict_from_url)
    fid_inception.load_state_dict_from_url = fake_load
    tv_api.load_state_dict_from_url = fake_load
    try:
        model = fid_inception.InceptionV3(
            output_blocks=[0, 1, 2, 3], use_fid_inception=(variant == "fid")
        )
    finally:
        fid_inception.load_state_dict_from_url, tv_api.load_state_dict_from_url = saved
    return model.eval()


def load_images() -> tuple[torch.Tensor, list[str]]:
    arrays = []
    for rel in IMAGES:
        with Image.open(DATASETS / rel) as im:
            arrays.append(np.asarray(im.convert("RGB")))  # pytorch-fid's ImagePathDataset
    u8 = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return u8, IMAGES


def checksums(state: dict[str, torch.Tensor]) -> dict:
    return {
        k: {"shape": list(v.shape), "sum": float(v.double().sum())}
        for k, v in sorted(state.items())
    }


# ---- tiny PyTorch pickles for the loader tests -------------------------------------------


def tiny_state() -> dict[str, torch.Tensor]:
    """A real `state_dict()` (an OrderedDict with `_metadata`, BatchNorm buffers including
    `num_batches_tracked`) plus tensors that exercise the layout cases."""
    g = torch.Generator().manual_seed(7)
    module = torch.nn.Sequential()
    module.add_module("conv", torch.nn.Conv2d(3, 4, 3, bias=False))
    module.add_module("bn", torch.nn.BatchNorm2d(4))
    with torch.no_grad():
        for t in module.state_dict().values():
            if t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g))
    module.bn.num_batches_tracked.fill_(5)
    state = module.state_dict()
    base = torch.randn(6, 5, generator=g)
    state["transposed.weight"] = torch.randn(3, 5, generator=g).t()  # non-contiguous
    state["view.weight"] = base[2:5]  # storage offset into a shared storage
    state["shared.weight"] = base
    state["half.weight"] = torch.randn(2, 3, generator=g).half()
    state["double.weight"] = torch.randn(3, generator=g).double()
    state["scalar"] = torch.tensor(1.5)
    return state


def save_legacy_2017(obj: dict, path: Path) -> None:
    """The legacy (non-zip) format with 2017-era pickles: `_rebuild_tensor` (v1) and Python 2
    string opcodes (SHORT_BINSTRING) instead of BINUNICODE."""
    storages: dict[str, tuple] = {}

    def persistent_id(o):
        if isinstance(o, torch.storage.TypedStorage):
            key = str(o._cdata)
            storages.setdefault(key, o)
            return ("storage", getattr(torch, o._pickle_storage_type()), key, "cpu", o._size(), None)
        return None

    def reduce_tensor(t):
        storage = torch.storage.TypedStorage(
            wrap_storage=t.untyped_storage(), dtype=t.dtype, _internal=True
        )
        return (torch._utils._rebuild_tensor, (storage, t.storage_offset(), tuple(t.size()), t.stride()))

    buf = io.BytesIO()
    for header in (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 8}}):
        pickle.dump(header, buf, protocol=2)
    body = io.BytesIO()
    pickler = pickle.Pickler(body, protocol=2)
    pickler.persistent_id = persistent_id
    pickler.dispatch_table = copyreg.dispatch_table.copy()
    pickler.dispatch_table[torch.Tensor] = reduce_tensor
    pickler.dump(obj)
    buf.write(py2_strings(body.getvalue()))
    keys = sorted(storages)
    buf.write(py2_strings(pickle.dumps(keys, protocol=2)))
    for k in keys:
        s = storages[k]
        raw = bytes(s._untyped_storage.cpu())
        buf.write(struct.pack("<q", s._size()))
        buf.write(raw)
    path.write_bytes(buf.getvalue())


def py2_strings(data: bytes) -> bytes:
    """Rewrite BINUNICODE of ASCII strings as SHORT_BINSTRING ('U'), as Python 2's pickle
    wrote `str` (torch.load decodes them with encoding='utf-8')."""
    out = bytearray()
    ops = list(pickletools.genops(data))
    for i, (op, arg, pos) in enumerate(ops):
        end = ops[i + 1][2] if i + 1 < len(ops) else len(data)
        if op.name == "BINUNICODE" and arg.isascii() and len(arg) < 256:
            out += b"U" + bytes([len(arg)]) + arg.encode("ascii")
        else:
            out += data[pos:end]
    return bytes(out)


def write_pth_fixtures(out: Path) -> None:
    d = out / "pth"
    d.mkdir(parents=True, exist_ok=True)
    state = tiny_state()
    torch.save(state, d / "tiny_zip.pth")
    torch.save(state, d / "tiny_legacy.pth", _use_new_zipfile_serialization=False)
    nested = {"model_state_dict": state, "epoch": 3, "note": "other entries are ignored"}
    torch.save(nested, d / "tiny_nested_zip.pth")
    torch.save(nested, d / "tiny_nested_legacy.pth", _use_new_zipfile_serialization=False)
    save_legacy_2017(state, d / "tiny_legacy_2017.pth")
    expected = {k: v.contiguous().clone() for k, v in state.items()}
    # Every file must read back as exactly `state` with torch itself.
    for name in ["tiny_zip.pth", "tiny_legacy.pth", "tiny_legacy_2017.pth"]:
        back = torch.load(d / name, weights_only=False)
        assert back.keys() == state.keys(), name
        for k in state:
            assert torch.equal(back[k], state[k]) and back[k].dtype == state[k].dtype, (name, k)
    for name in ["tiny_nested_zip.pth", "tiny_nested_legacy.pth"]:
        back = torch.load(d / name, weights_only=False)["model_state_dict"]
        assert all(torch.equal(back[k], state[k]) for k in state), name
    save_file(expected, str(d / "expected.safetensors"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "tests/fixtures/eval/inception")
    ap.add_argument("--write-pth", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)

    u8, names = load_images()
    x01 = u8.float().div(255)  # TF.to_tensor's arithmetic
    assert torch.equal(x01[0], TF.to_tensor(Image.open(DATASETS / names[0]).convert("RGB")))
    resized = torch.nn.functional.interpolate(x01, size=(299, 299), mode="bilinear", align_corners=False)
    net_in = 2 * resized - 1

    tensors: dict[str, torch.Tensor] = {
        "images_u8": u8,
        "input299_rowsum": net_in.double().sum(dim=3),
        "input299_colsum": net_in.double().sum(dim=2),
        "input299_crop": net_in[:, :, :24, :24].contiguous(),
    }
    meta: dict = {
        "seed": args.seed,
        "images": names,
        "preprocessing": "PIL convert('RGB'), /255, F.interpolate(299x299, bilinear, align_corners=False), 2x-1 (pytorch-fid InceptionV3.forward)",
        "versions": {
            p: importlib.metadata.version(p)
            for p in ["torch", "torchvision", "pytorch-fid", "numpy", "pillow", "safetensors", "scipy"]
        },
        "urls": {"fid": FID_URL, "torchvision": TORCHVISION_URL},
        "variants": {},
    }
    full_states = {}
    for variant, skeleton in [("fid", fid_skeleton()), ("torchvision", torchvision_skeleton())]:
        state = random_state_dict(skeleton, args.seed)
        full_states[variant] = state
        model = reference_model(variant, state)
        with torch.no_grad():
            blocks = model(x01)
        for k, b in enumerate(blocks[:3]):
            tensors[f"{variant}.block{k}_mean"] = b.mean(dim=(2, 3)).contiguous()
        feats = blocks[3].flatten(1).contiguous()
        tensors[f"{variant}.features"] = feats
        nonzero = float((feats > 0).float().mean())
        meta["variants"][variant] = {
            "block_shapes": [list(b.shape) for b in blocks],
            "features_abs_max": float(feats.abs().max()),
            "features_mean": float(feats.mean()),
            "features_nonzero_fraction": nonzero,
            "tensors": checksums(state),
        }
        print(f"{variant}: features max {feats.abs().max():.4g} mean {feats.mean():.4g} nonzero {nonzero:.3f}")

    save_file(tensors, str(out / "fixtures.safetensors"))
    (out / "fixtures.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    write_pth_fixtures(out)

    if args.write_pth is not None:
        d: Path = args.write_pth
        d.mkdir(parents=True, exist_ok=True)
        for variant, state in full_states.items():
            skeleton = fid_skeleton() if variant == "fid" else torchvision_skeleton()
            skeleton.load_state_dict(state)
            state = skeleton.state_dict()  # an OrderedDict with `_metadata`, as the real files
            torch.save(state, d / f"{variant}_legacy.pth", _use_new_zipfile_serialization=False)
            torch.save(state, d / f"{variant}_zip.pth")
            save_file({k: v.contiguous() for k, v in state.items()}, str(d / f"{variant}.safetensors"))
        print(f"full random checkpoints written to {d}")
    print(f"fixtures written to {out}")


if __name__ == "__main__":
    sys.exit(main())
