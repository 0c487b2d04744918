"""Dev-only: check that a learned embedding written by `contrastive_train` loads in diffusers.

    nsync run pipelines/demo.toml
    nsync export pipelines/demo.toml tiny_model --to /tmp/ex/model
    nsync export pipelines/demo.toml style --to /tmp/ex/style
    python tools/check_embedding_loads.py /tmp/ex/model/model.tar /tmp/ex/style/embedding/embedding.safetensors "<monet>"

Needs the dev venv of tools/README.md.
"""

import sys
import tarfile
import tempfile

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

model_tar, embedding, token = sys.argv[1], sys.argv[2], sys.argv[3]
with tempfile.TemporaryDirectory() as d:
    tarfile.open(model_tar).extractall(d)
    pipe = StableDiffusionPipeline.from_pretrained(d, safety_checker=None)
    pipe.load_textual_inversion(embedding, token=token)
    tid = pipe.tokenizer.convert_tokens_to_ids(token)
    row = pipe.text_encoder.get_input_embeddings().weight[tid].detach()
    want = load_file(embedding)[token][0]
    assert torch.equal(row, want), "the loaded row differs from the file"
    image = pipe(f"a harbour in the style of {token}", num_inference_steps=3, height=64, width=64,
                 output_type="np", generator=torch.Generator().manual_seed(0)).images[0]
    assert np.isfinite(image).all()
    print(f"{token} loaded as id {tid}; sampled {image.shape}")
