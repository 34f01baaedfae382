"""Issue #17 study: which recipe makes TS-CAM's coupled map beat its own attention on this benchmark?

One run = stage 1 (plain Fashion-MNIST classification, the ImageNet analogue) then stage 2
(TS-CAM on cluttered images, the CUB analogue), on reduced budgets, scored on held-out images
rendered from Fashion-MNIST *test* items that no stage trained on (the generator's test stream
from index --val-start on, past the official test split's images).

    python experiments/study.py --name A --stage1-head gap
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from tscam_core.boxes import upsample_maps
from tscam_core.datasets.fashion import BenchmarkConfig, find_source, load_fashion_mnist, render_split
from tscam_core.explanation import MapSpec
from tscam_core.model import create_tscam
from tscam_core.overlaps import largest_box_ious
from tscam_core.pretraining import PlainFashion
from tscam_core.training import lr_factor, train_step
from tscam_core.transforms import IMAGENET_MEAN, IMAGENET_STD

THRESHOLDS = [round(0.05 * k, 2) for k in range(1, 20)]
MEAN = torch.tensor(IMAGENET_MEAN)[:, None, None]
STD = torch.tensor(IMAGENET_STD)[:, None, None]


def rendered(split: str, start: int, count: int, canvas: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N x C x S x S uint8 images, labels, N x 4 half-open boxes) of the generator's stream."""
    config = BenchmarkConfig(train=0, test=0, canvas=canvas, item_min=round(28 * canvas / 64),
                             item_max=round(52 * canvas / 64), seed=seed)
    images, labels = load_fashion_mnist(find_source(None), split)
    order = np.random.default_rng([seed, 1 if split == "train" else 2]).permutation(len(images))
    out = np.empty((count, 3, canvas, canvas), np.uint8)
    boxes = np.empty((count, 4), np.float32)
    classes = np.empty(count, np.int64)
    for n, index in enumerate(range(start, start + count)):
        item, picture = render_split(images, config, split, index, order)
        out[n] = picture.image.transpose(2, 0, 1)
        boxes[n] = picture.box
        classes[n] = labels[item]
    return out, classes, boxes


def normalise(batch: torch.Tensor) -> torch.Tensor:
    return (batch.float() / 255 - MEAN) / STD


def augment(batch: torch.Tensor, crop: int, generator: torch.Generator) -> torch.Tensor:
    """The recipe's geometry (resize to 9/8 of the crop, random crop, flip), per image, on uint8 tensors."""
    size = crop * 9 // 8
    resized = F.interpolate(batch.float(), size=(size, size), mode="bilinear", align_corners=False)
    out = torch.empty(batch.shape[0], 3, crop, crop)
    offsets = torch.randint(0, size - crop + 1, (batch.shape[0], 2), generator=generator)
    flips = torch.rand(batch.shape[0], generator=generator) < 0.5
    for k in range(batch.shape[0]):
        y, x = offsets[k].tolist()
        piece = resized[k, :, y:y + crop, x:x + crop]
        out[k] = piece.flip(-1) if flips[k] else piece
    return (out / 255 - MEAN) / STD


def optimizer_for(model: torch.nn.Module, lr_backbone: float, lr_head: float, weight_decay: float) -> torch.optim.AdamW:
    groups: dict[tuple[bool, bool], list] = {}
    for name, parameter in model.named_parameters():
        head = name.startswith(("head.", "fc_norm."))
        no_decay = parameter.ndim <= 1 or name.endswith(("cls_token", "pos_embed"))
        groups.setdefault((head, no_decay), []).append(parameter)
    return torch.optim.AdamW(
        [{"params": p, "lr": lr_head if head else lr_backbone, "weight_decay": 0.0 if nd else weight_decay}
         for (head, nd), p in groups.items()], betas=(0.9, 0.99), eps=1e-8)


def run_stage(model, batches, epochs: int, steps: int, optimizer, label_smoothing: float, tag: str,
              device: torch.device) -> list[float]:
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, epochs * steps, int(0.3 * steps), "cosine", 0.01))
    model.train()
    losses = []
    for epoch in range(epochs):
        started, total, correct, seen = time.perf_counter(), 0.0, 0, 0
        for images, labels in batches(epoch):
            result = train_step(model, images.to(device), labels.to(device), optimizer, label_smoothing=label_smoothing)
            scheduler.step()
            total += result.loss * result.count
            correct += result.correct
            seen += result.count
        losses.append(total / seen)
        print(f"{tag} epoch {epoch + 1}/{epochs}: loss {total / seen:.3f} acc {correct / seen:.3f} "
              f"{seen / (time.perf_counter() - started):.0f} img/s", flush=True)
    return losses


@torch.no_grad()
def evaluate(model, images: np.ndarray, labels: np.ndarray, boxes: np.ndarray, device: torch.device) -> dict:
    """Top-1 Cls and GT-known Loc of each map at each CAM threshold; per-image hits kept for intervals."""
    model.eval()
    specs = {"tscam": MapSpec("tscam"), "trans_attention": MapSpec("trans_attention"), "trans_cam": MapSpec("trans_cam")}
    hits = {name: [] for name in specs}
    correct = []
    for start in range(0, len(images), 100):
        batch = normalise(torch.from_numpy(images[start:start + 100]))
        classes = torch.from_numpy(labels[start:start + 100])
        explanation = model.explain(batch.to(device))
        correct += (explanation.logits.argmax(1).cpu() == classes).tolist()
        for name, spec in specs.items():
            maps = upsample_maps(explanation.maps(spec, classes[:, None].to(device))[:, 0].float().cpu(),
                                 tuple(batch.shape[-2:]))
            for k in range(len(classes)):
                ious = largest_box_ious(maps[k], boxes[start + k][None], THRESHOLDS)
                hits[name].append(ious >= 0.5)
    result = {"images": len(images), "top1_cls": float(np.mean(correct)), "cls_hits": "".join(str(int(c)) for c in correct)}
    for name, rows in hits.items():
        curve = np.mean(rows, axis=0)
        best = int(np.argmax(curve))
        result[name] = {"best": float(curve[best]), "threshold": THRESHOLDS[best], "curve": [round(float(v), 4) for v in curve],
                        "hits": "".join(str(int(row[best])) for row in rows)}
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--stage1-head", choices=("gap", "token", "none"), default="token",
                        help="gap: TS-CAM's conv head (today); token: a plain ViT class-token classifier; none: skip")
    parser.add_argument("--stage1-images", type=int, default=20000)
    parser.add_argument("--stage1-epochs", type=int, default=2)
    parser.add_argument("--stage1-lr", type=float, default=1e-3)
    parser.add_argument("--stage1-size", type=int, default=48)
    parser.add_argument("--stage2-images", type=int, default=10000)
    parser.add_argument("--stage2-epochs", type=int, default=3)
    parser.add_argument("--lr-backbone", type=float, default=5e-4)
    parser.add_argument("--lr-head", type=float, default=5e-4)
    parser.add_argument("--canvas", type=int, default=64)
    parser.add_argument("--patch-size", type=int, default=2)
    parser.add_argument("--embed-dim", type=int, default=128)
    parser.add_argument("--depth", type=int, default=6)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--val-start", type=int, default=2000, help="first test-stream index (past the official test split)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, ...: where the model trains and is scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stage1-cache", default="", help="reuse/save the stage-1 weights here")
    parser.add_argument("--out", default="experiments/runs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    kwargs = dict(img_size=args.canvas, patch_size=args.patch_size, depth=args.depth, embed_dim=args.embed_dim,
                  num_heads=max(1, args.embed_dim // 32))
    arch = "vit_tiny_r_s16_p8_224"
    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    model = create_tscam(arch, 10, **kwargs).to(device)
    generator = torch.Generator().manual_seed(args.seed)
    times = {}

    if args.stage1_head != "none":
        cache = Path(args.stage1_cache) if args.stage1_cache else None
        stage1 = create_tscam(arch, 10, head_kind="linear", global_pool="token", **kwargs).to(device) \
            if args.stage1_head == "token" else model
        if cache is not None and cache.exists():
            stage1.load_state_dict(torch.load(cache, map_location=device))
            print(f"stage 1 weights from {cache}")
        else:
            plain = PlainFashion.from_source(None, args.stage1_size, args.stage1_images, args.seed)
            steps = len(plain) // 64

            def plain_batches(epoch: int):
                plain.set_epoch(epoch)
                order = torch.randperm(len(plain), generator=generator)
                for s in range(steps):
                    items = [plain[int(i)] for i in order[s * 64:(s + 1) * 64]]
                    yield torch.stack([i["image"] for i in items]), torch.tensor([i["label"] for i in items])

            t = time.perf_counter()
            run_stage(stage1, plain_batches, args.stage1_epochs, steps,
                      optimizer_for(stage1, args.stage1_lr, args.stage1_lr, 0.05), 0.1, "stage 1", device)
            times["stage1_s"] = round(time.perf_counter() - t)
            if cache is not None:
                torch.save(stage1.state_dict(), cache)
        if stage1 is not model:  # the class-token classifier's backbone, under a new conv head
            backbone = {k: v for k, v in stage1.state_dict().items() if not k.startswith(("head.", "fc_norm."))}
            missing, unexpected = model.load_state_dict(backbone, strict=False)
            assert sorted(missing) == ["head.bias", "head.weight"] and not unexpected, (missing, unexpected)

    images, labels, _ = rendered("train", 0, args.stage2_images, args.canvas, args.seed)
    steps = len(images) // 64

    def cluttered_batches(epoch: int):
        order = torch.randperm(len(images), generator=generator)
        for s in range(steps):
            chosen = order[s * 64:(s + 1) * 64].numpy()
            yield augment(torch.from_numpy(images[chosen]), args.canvas, generator), torch.from_numpy(labels[chosen])

    t = time.perf_counter()
    run_stage(model, cluttered_batches, args.stage2_epochs, steps,
              optimizer_for(model, args.lr_backbone, args.lr_head, 0.05), 0.1, "stage 2", device)
    times["stage2_s"] = round(time.perf_counter() - t)
    val = rendered("test", args.val_start, args.val_images, args.canvas, args.seed)
    result = evaluate(model, *val, device)
    params = sum(p.numel() for p in model.parameters())
    record = {"name": args.name, "args": vars(args), "params": params, "mb_fp32": round(params * 4 / 2**20, 2),
              **times, "total_s": round(time.perf_counter() - started), **result}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), out / f"{args.name}.pt")
    (out / f"{args.name}.json").write_text(json.dumps(record, indent=1) + "\n")
    print(f"{args.name}: top-1 {result['top1_cls']:.3f} | " + " | ".join(
        f"{n} {result[n]['best']:.3f}@{result[n]['threshold']}" for n in ("tscam", "trans_attention", "trans_cam")),
        f"| {record['total_s']} s", flush=True)


if __name__ == "__main__":
    main()
