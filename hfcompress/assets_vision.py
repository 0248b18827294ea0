"""An image-classification teacher trained here: a small ViT on ``fixtures/digits``.

No pretrained ViT ships in a PyPI package that these machines can use, so the teacher is a
``ViTForImageClassification`` built from a ``ViTConfig`` (32×32 RGB, 16×16 patches (4 tokens + CLS), 4 layers,
hidden 64, 4 heads) and trained on the digits ``train`` split on the CPU (seeded; a few
minutes), with random shifts as augmentation, for a fixed :data:`EPOCHS` (one-cycle schedule;
no early stopping, no model selection on the test split). The build stops with an error when
test accuracy is below :data:`MIN_TEST_ACCURACY`. Usage::

    from hfcompress.assets import ensure_asset, VIT_DIGITS
    folder = ensure_asset(VIT_DIGITS)   # ViTForImageClassification.from_pretrained(folder)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .errors import HFCompressError

MIN_TEST_ACCURACY = 0.95
EPOCHS = 40
BATCH = 64
LR = 2e-3
SEED = 0


def vit_digits_config() -> Any:
    from transformers import ViTConfig

    labels = [str(i) for i in range(10)]
    return ViTConfig(image_size=32, patch_size=16, num_channels=3, hidden_size=64, num_hidden_layers=4,
                     num_attention_heads=4, intermediate_size=256, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, num_labels=10,
                     id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)},
                     architectures=["ViTForImageClassification"])


def _tensors(dataset_folder: Path, split: str, processor: Any) -> tuple[Any, Any]:
    import datasets
    import torch

    ds = datasets.load_dataset(str(dataset_folder), split=split)
    pixels = processor([im.convert("RGB") for im in ds["image"]], return_tensors="pt")["pixel_values"]
    return pixels, torch.tensor(ds["label"])


def _accuracy(model: Any, x: Any, y: Any) -> float:
    import torch

    with torch.inference_mode():
        pred = torch.cat([model(pixel_values=x[i:i + 256]).logits.argmax(-1) for i in range(0, len(x), 256)])
    return float((pred == y).float().mean())


def build_vit_digits(dest: Path, dataset_folder: Path, log=print) -> dict[str, Any]:
    """Train the teacher on ``dataset_folder`` (a ``fixtures/digits`` copy) and save it to ``dest``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: one thread is as fast, and far faster on a shared machine
    try:
        return _train(dest, dataset_folder, log)
    finally:
        torch.set_num_threads(threads)


def _train(dest: Path, dataset_folder: Path, log) -> dict[str, Any]:
    import torch
    from transformers import ViTForImageClassification, ViTImageProcessor

    torch.manual_seed(SEED)
    processor = ViTImageProcessor(do_resize=True, size={"height": 32, "width": 32}, do_rescale=True,
                                  do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    x_train, y_train = _tensors(dataset_folder, "train", processor)
    x_test, y_test = _tensors(dataset_folder, "test", processor)
    model = ViTForImageClassification(vit_digits_config())
    opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.05)
    steps = EPOCHS * ((len(x_train) + BATCH - 1) // BATCH)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(SEED)
    start = time.time()
    model.train()
    for epoch in range(EPOCHS):
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order), BATCH):
            idx = order[i:i + BATCH]
            xb = x_train[idx]
            # Augmentation: shift each batch by up to 2 pixels (the background value is -1).
            dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=gen))
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
            loss = torch.nn.functional.cross_entropy(model(pixel_values=xb).logits, y_train[idx],
                                                     label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        if (epoch + 1) % 10 == 0:  # progress only: nothing is selected on these figures
            model.eval()
            log(f"vit-digits: epoch {epoch + 1}/{EPOCHS} loss {loss.item():.3f} "
                f"test accuracy {_accuracy(model, x_test, y_test):.4f} ({time.time() - start:.0f}s)")
            model.train()
    model.eval()
    acc = _accuracy(model, x_test, y_test)
    if acc < MIN_TEST_ACCURACY:
        raise HFCompressError(f"the ViT digits teacher reached only {acc:.3f} test accuracy "
                              f"(< {MIN_TEST_ACCURACY}): rebuild with `hfcompress assets --rebuild`")
    model.save_pretrained(dest)
    processor.save_pretrained(dest)
    info = {"test_accuracy": round(acc, 4), "train_accuracy": round(_accuracy(model, x_train, y_train), 4),
            "epochs": EPOCHS, "train_images": len(x_train), "batch_size": BATCH, "lr": LR, "seed": SEED,
            "parameters": sum(p.numel() for p in model.parameters()), "train_seconds": round(time.time() - start)}
    (dest / "training.json").write_text(json.dumps(info, indent=2))
    return info
