#!/usr/bin/env python3
"""Reference tensors for segdiff-eval's Inception-v3 feature extractor (`inception.rs`).

The network is torchvision's `inception_v3` (torchvision/models/inception.py) in eval mode, cut
after the global average pool (2048 features). Preprocessing is pytorch-fid's: images in [0, 1]
resized to 299x299 with `F.interpolate(mode="bilinear", align_corners=False)` (no antialias),
then mapped to [-1, 1]. This script also checks that this equals torchvision's own path for the
IMAGENET1K_V1 weights (ImageNet mean/std normalisation followed by `transform_input=True`).

No pretrained weights are needed or downloaded: every weight here is random, drawn from a
torch.Generator with a fixed seed.

Usage (torch + torchvision + safetensors):
  python bench/oracle/inception_oracle.py
      writes the committed fixtures into crates/segdiff-eval/tests/fixtures/:
      inception_v3_tensors.txt   state_dict names + shapes of the feature part of
                                 inception_v3(weights=None, aux_logits=False, init_weights=True)
      inception_v3_parts.safetensors
                                 resize cases, the 299x299 preprocessing of a grey image, and the
                                 stem convs + max pool, InceptionA and InceptionC
                                 blocks with small in_channels, random weights and random
                                 BatchNorm running stats (eval mode)
  python bench/oracle/inception_oracle.py --full OUT_DIR
      writes OUT_DIR/inception_v3_random.safetensors (the whole random-weight network, its full
      state_dict including fc, AuxLogits and num_batches_tracked) and
      OUT_DIR/inception_v3_full_io.safetensors (`images`: 2 RGB images in [0, 1] of 75x90,
      `features`: torchvision's 2048-d pool output for them, `input`: the 299x299 network input)
"""
import argparse
import pathlib

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from torchvision.models.inception import (
    BasicConv2d,
    InceptionA,
    InceptionC,
    inception_v3,
)

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "crates" / "segdiff-eval" / "tests" / "fixtures"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SEED = 20240205

torch.set_num_threads(2)


def randomise(module: nn.Module, gen: torch.Generator, half_exact: bool) -> None:
    """He-scaled conv weights (activations stay O(1) through the depth) and BatchNorm affine
    parameters and running statistics away from the identity, so that eval-mode BN is tested.
    With `half_exact`, conv weights are rounded to float16 values (stored as float16, exactly)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            fan_in = m.weight[0].numel()
            w = torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5
            if half_exact:
                w = w.half().float()
            m.weight.data.copy_(w)
        elif isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)


def block_tensors(prefix: str, module: nn.Module) -> dict:
    """The block's state_dict under `prefix.`, conv weights as (exact) float16."""
    out = {}
    for k, v in module.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        v = v.detach().contiguous()
        if k.endswith("conv.weight"):
            assert torch.equal(v.half().float(), v)
            v = v.half()
        out[f"{prefix}.{k}"] = v
    return out


def resize(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def pytorch_fid_input(x01: torch.Tensor) -> torch.Tensor:
    """pytorch-fid's InceptionV3 input: resize to 299, then 2x - 1; grey replicated to RGB."""
    if x01.shape[1] == 1:
        x01 = x01.repeat(1, 3, 1, 1)
    return 2 * resize(x01, 299, 299) - 1


def torchvision_input(x01: torch.Tensor, model) -> torch.Tensor:
    """What torchvision feeds its layers for IMAGENET1K_V1: normalised, then transform_input."""
    if x01.shape[1] == 1:
        x01 = x01.repeat(1, 3, 1, 1)
    x = resize(x01, 299, 299)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return model._transform_input((x - mean) / std)


def write_names() -> None:
    torch.manual_seed(0)
    model = inception_v3(weights=None, aux_logits=False, init_weights=True).eval()
    lines = [
        "# torchvision inception_v3(weights=None, aux_logits=False, init_weights=True).state_dict()",
        "# feature part only: without fc.* and *.num_batches_tracked (made by bench/oracle/inception_oracle.py)",
    ]
    for k, v in model.state_dict().items():
        if k.startswith("fc.") or k.endswith("num_batches_tracked"):
            continue
        lines.append(f"{k}\t{list(v.shape)}\t{str(v.dtype).removeprefix('torch.')}")
    learnable = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("fc."))
    lines.append(f"# total_params\t{learnable}")
    (FIXTURES / "inception_v3_tensors.txt").write_text("\n".join(lines) + "\n")
    print(f"names: {len(lines) - 3} tensors, {learnable} learnable parameters")


def write_parts() -> None:
    gen = torch.Generator().manual_seed(SEED)
    t = {}
    # Bilinear resize, up, down and mixed, on an RGB batch.
    x = torch.rand(2, 3, 11, 7, generator=gen)
    t["resize.x"] = x
    for name, (h, w) in {"up": (23, 16), "down": (5, 4), "mixed": (17, 3), "same": (11, 7)}.items():
        t[f"resize.{name}"] = resize(x, h, w)
    # The whole preprocessing of a grey image to 299x299 (channel 0 only: all three are equal).
    g = torch.rand(1, 1, 9, 6, generator=gen)
    pre = pytorch_fid_input(g)
    tv = torchvision_input(
        g, inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=True)
    )
    print(f"pytorch-fid vs torchvision transform_input: max |diff| {(pre - tv).abs().max():.2e}")
    assert (pre - tv).abs().max() < 1e-5
    assert torch.equal(pre[:, 0], pre[:, 1]) and torch.equal(pre[:, 0], pre[:, 2])
    t["preprocess.x"] = g
    t["preprocess.channel0"] = pre[:, :1].contiguous()

    with torch.no_grad():
        # Stem: Conv2d_1a_3x3 (stride 2), Conv2d_2a_3x3, Conv2d_2b_3x3 (padding 1), max pool 3/2.
        stem = nn.ModuleDict(
            {
                "Conv2d_1a_3x3": BasicConv2d(3, 32, kernel_size=3, stride=2),
                "Conv2d_2a_3x3": BasicConv2d(32, 32, kernel_size=3),
                "Conv2d_2b_3x3": BasicConv2d(32, 64, kernel_size=3, padding=1),
            }
        ).eval()
        randomise(stem, gen, half_exact=True)
        x = torch.randn(1, 3, 23, 21, generator=gen)
        y = x
        for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"):
            y = stem[name](y)
        y = F.max_pool2d(y, kernel_size=3, stride=2)
        t.update(block_tensors("stem", stem))
        t["stem.x"], t["stem.out"] = x, y

        blocks = {
            "inception_a": (InceptionA(5, pool_features=6), (1, 5, 7, 6)),
            "inception_c": (InceptionC(6, channels_7x7=7), (1, 6, 5, 6)),
        }
        for prefix, (block, shape) in blocks.items():
            block.eval()
            randomise(block, gen, half_exact=True)
            x = torch.randn(*shape, generator=gen)
            t.update(block_tensors(prefix, block))
            t[f"{prefix}.x"], t[f"{prefix}.out"] = x, block(x)
    path = FIXTURES / "inception_v3_parts.safetensors"
    save_file({k: v.contiguous() for k, v in t.items()}, str(path))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def write_full(out_dir: pathlib.Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(SEED + 1)
    model = inception_v3(weights=None, aux_logits=True, init_weights=False).eval()
    randomise(model, gen, half_exact=False)
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, str(out_dir / "inception_v3_random.safetensors"))
    images = torch.rand(2, 3, 75, 90, generator=gen)
    model.fc = nn.Identity()
    model.transform_input = True
    with torch.no_grad():
        x = torchvision_input(images, model)
        model.transform_input = False  # already applied by torchvision_input
        features = model(x)
        via_fid = model(pytorch_fid_input(images))
    print(
        f"features: mean {features.mean():.4f}, std {features.std():.4f}; "
        f"pytorch-fid input vs torchvision input: max |diff| {(features - via_fid).abs().max():.2e}"
    )
    save_file(
        {"images": images, "features": features.contiguous(), "input": x.contiguous()},
        str(out_dir / "inception_v3_full_io.safetensors"),
    )
    print(f"wrote {out_dir}/inception_v3_random.safetensors and inception_v3_full_io.safetensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--full", type=pathlib.Path, metavar="OUT_DIR")
    args = parser.parse_args()
    if args.full is not None:
        write_full(args.full)
    else:
        write_names()
        write_parts()


if __name__ == "__main__":
    main()
