#!/usr/bin/env python3
"""The PyTorch side of the Inception v3 throughput comparison (FID / KID feature extraction).

    python bench/inception_reference.py [--threads 2] [--batch 8 16] [--repeats 3]
                                        [--variant fid|torchvision] [--passive]

Builds pytorch-fid's `InceptionV3` (block 3, the 2048-d pool features) with random weights
and no download — `use_fid_inception=True`: the FID network (FIDInceptionA/C/E_1/E_2);
`torchvision`: torchvision's plain Inception3 — and times its forward pass on random
[B, 3, 299, 299] input in f32 on the CPU, under torch.inference_mode(), with
torch.set_num_threads(N) and OMP_NUM_THREADS / MKL_NUM_THREADS = N. The input is already
299×299 and scaled, so pytorch-fid's resize and normalisation are switched off (the Rust
side times the same: the network alone). One warm-up call per batch size, then the mean
of `--repeats` calls. Prints one JSON document:

    {"images_per_s": <at the largest batch>,
     "batches": [{"batch": 8, "images_per_s": ..., "images_per_cpu_s": ...}, ...],
     "threads": N, "omp_wait_policy": "...", "variant": "...", "torch": "..."}

`images_per_cpu_s` divides by the process's CPU time instead of wall time: on a busy
machine it is the steadier measure of a single thread's efficiency (with more threads it
also counts time spent spinning at barriers).

The nsync side (same threads, release build):

    RAYON_NUM_THREADS=2 cargo test --release -p nsync-nodes --test inception_parity \
        -- --ignored --nocapture throughput

Written with torch 2.15.0, torchvision 0.29.2, pytorch-fid 0.3.0 (see
tools/make_inception_fixtures.py for the install line).
"""

import argparse
import json
import os
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variant", choices=["fid", "torchvision"], default="fid")
    ap.add_argument(
        "--passive",
        action="store_true",
        help="OMP_WAIT_POLICY=PASSIVE: OpenMP threads sleep instead of spinning at barriers "
        "(much faster for PyTorch when other processes share the cores)",
    )
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["MKL_NUM_THREADS"] = str(args.threads)
    if args.passive:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

    import torch
    import torchvision.models._api as tv_api
    import pytorch_fid.inception as fid_inception

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    # No download: hand the reference code the state dict of a randomly initialised twin.
    if args.variant == "fid":
        twin = fid_inception._inception_v3(num_classes=1008, aux_logits=False, weights=None)
        for name, cls, arg in [
            ("Mixed_5b", fid_inception.FIDInceptionA, (192, 32)),
            ("Mixed_5c", fid_inception.FIDInceptionA, (256, 64)),
            ("Mixed_5d", fid_inception.FIDInceptionA, (288, 64)),
            ("Mixed_6b", fid_inception.FIDInceptionC, (768, 128)),
            ("Mixed_6c", fid_inception.FIDInceptionC, (768, 160)),
            ("Mixed_6d", fid_inception.FIDInceptionC, (768, 160)),
            ("Mixed_6e", fid_inception.FIDInceptionC, (768, 192)),
            ("Mixed_7b", fid_inception.FIDInceptionE_1, (1280,)),
            ("Mixed_7c", fid_inception.FIDInceptionE_2, (2048,)),
        ]:
            setattr(twin, name, cls(*arg))
    else:
        import torchvision

        twin = torchvision.models.Inception3(num_classes=1000, aux_logits=True, init_weights=False)
    state = twin.state_dict()
    fid_inception.load_state_dict_from_url = lambda *a, **k: state
    tv_api.load_state_dict_from_url = lambda *a, **k: state
    model = fid_inception.InceptionV3(
        output_blocks=[3],
        resize_input=False,
        normalize_input=False,
        use_fid_inception=(args.variant == "fid"),
    ).eval()

    results = []
    with torch.inference_mode():
        for batch in args.batch:
            x = torch.rand(batch, 3, 299, 299) * 2 - 1
            out = model(x)[0]
            assert out.shape == (batch, 2048, 1, 1)
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.repeats):
                model(x)
            secs = (time.perf_counter() - start) / args.repeats
            cpu = time.process_time() - cpu
            results.append(
                {
                    "batch": batch,
                    "images_per_s": round(batch / secs, 2),
                    "images_per_cpu_s": round(batch * args.repeats / cpu, 2),
                }
            )
    print(
        json.dumps(
            {
                "images_per_s": results[-1]["images_per_s"],
                "batches": results,
                "threads": args.threads,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "default"),
                "variant": args.variant,
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    sys.exit(main())
