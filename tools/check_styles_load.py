"""Dev-only: check that the embedding file of a multi-style `contrastive_train` (one tensor per
token, diffusers' `{"<tok>": [n_vectors, dim]}` layout) loads in diffusers and samples with
every token in one prompt.

    nsync run pipelines/two.toml           # a pipeline with `styles = [...]` (see README)
    nsync export pipelines/two.toml tiny_model --to /tmp/ex/model
    nsync export pipelines/two.toml styles --to /tmp/ex/styles
    python tools/check_styles_load.py /tmp/ex/model/model.tar /tmp/ex/styles/embedding/embedding.safetensors

`load_textual_inversion` takes one token per file or state dict, so a file with several tokens
is passed as a list of one-token state dicts:

    pipe.load_textual_inversion([{k: v} for k, v in load_file(path).items()])

Multi-vector tokens expand to `<tok>`, `<tok>_1`, … exactly as nsync expands them. Needs the
dev venv of tools/README.md.
"""

import sys
import tarfile
import tempfile

import numpy as np
import torch
from diffusers import StableDiffusionPipeline
from safetensors.torch import load_file

model_tar, embedding = sys.argv[1], sys.argv[2]
tensors = load_file(embedding)
assert len(tensors) >= 2, f"expected several tokens, found {list(tensors)}"
with tempfile.TemporaryDirectory() as d:
    tarfile.open(model_tar).extractall(d)
    pipe = StableDiffusionPipeline.from_pretrained(d, safety_checker=None)
    pipe.set_progress_bar_config(disable=True)
    pipe.load_textual_inversion([{k: v} for k, v in sorted(tensors.items())])
    table = pipe.text_encoder.get_input_embeddings().weight.detach()
    for token, rows in sorted(tensors.items()):
        names = [token] + [f"{token}_{i}" for i in range(1, rows.shape[0])]
        ids = pipe.tokenizer.convert_tokens_to_ids(names)
        assert torch.equal(table[ids], rows), f"{token}: the loaded rows differ from the file"
        print(f"{token}: {rows.shape[0]} vector(s) loaded as ids {ids}")
    prompt = "a harbour in the style of " + " and ".join(sorted(tensors))
    image = pipe(prompt, num_inference_steps=3, height=64, width=64, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert np.isfinite(image).all()
    print(f"sampled {prompt!r}: {image.shape}")
