"""Train the finger-follower defect classifier and export it to ONNX.

    pip install torch==2.13.0   # the `train` extra; CPU is enough
    python training/train_defects.py --out agents/classification/models/finger_follower_defects.onnx

The data is the synthetic camera's parts (front and back views), rendered at the
camera's 1280x1024 and shrunk exactly as the classification agent's pre-processing
does (area resize to 320x256, gray, x/255, mean/std), so the model sees at run time
what it saw in training. Three disjoint synthetic seeds give the splits: training,
validation (picks the epoch and the decision threshold, favouring recall) and a
held-out test set rendered at the line's own defect and distractor rates, which the
model never sees until the final report.

Everything is seeded: the same command gives the same model and the same figures on
the same software versions.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import time
from typing import Any
from pathlib import Path

import cv2
import numpy as np

from graphrun_agents.camera.synthetic import SyntheticConfig, render_part
from defect_map import add_defect_map  # beside this script

INPUT_W, INPUT_H = 320, 256
CELL = 16  # input pixels per cell of the output grid (four 2x poolings)
MARGIN = 24  # input pixels around a defect whose cells are not trained as clean
MEAN, STD = 0.45, 0.25
PREPROCESS = {
    "resize": [INPUT_W, INPUT_H],
    "keep_aspect": False,
    "interpolation": "area",
    "color": "gray",
    "scale": 1 / 255,
    "mean": [MEAN],
    "std": [STD],
    "layout": "NCHW",
    "dtype": "float32",
}
#: (seed, defect_rate, distractor_rate) per split; the seeds never overlap.
SPLITS = {"train": (101, 0.5, 0.6), "val": (202, 0.5, 0.6), "test": (303, 0.3, 0.6)}


# --- data -------------------------------------------------------------------------------


def cell_targets(defects: list[dict], full_w: int, full_h: int) -> np.ndarray:
    """Target of each cell of the model's output grid: 1 defect, 0 clean, -1 not trained.

    The truth locates each defect (centre and extent). The cell holding a defect's
    centre is trained as defective; a cell whose block, widened by ``MARGIN`` for the
    receptive field, is clear of every defect is trained as clean; the rest (the
    defect's own surroundings, which may or may not show it) are left out.
    """
    near = np.zeros((INPUT_H, INPUT_W), np.uint8)
    sx, sy = INPUT_W / full_w, INPUT_H / full_h
    centres = []
    for d in defects:
        cx, cy = int(d["x"] * sx), int(d["y"] * sy)
        cv2.circle(near, (cx, cy), int(d["size"] * max(sx, sy) / 2 + MARGIN), 1, -1)
        centres.append((min(cy // CELL, INPUT_H // CELL - 1), min(cx // CELL, INPUT_W // CELL - 1)))
    blocks = near.reshape(INPUT_H // CELL, CELL, INPUT_W // CELL, CELL).max(axis=(1, 3))
    target = np.where(blocks == 0, 0, -1).astype(np.int8)
    for row, col in centres:
        target[row, col] = 1
    return target


def distractor_cells(distractors: list[dict], full_w: int, full_h: int) -> np.ndarray:
    """Cells holding the centre of dust or a particle: where the hard negatives are."""
    grid = np.zeros((INPUT_H // CELL, INPUT_W // CELL), bool)
    for d in distractors:
        row = min(max(int(d["y"] * INPUT_H / full_h) // CELL, 0), grid.shape[0] - 1)
        col = min(max(int(d["x"] * INPUT_W / full_w) // CELL, 0), grid.shape[1] - 1)
        grid[row, col] = True
    return grid


def _render(job: tuple[int, int, float, float, str]) -> tuple[np.ndarray, int, str, np.ndarray, np.ndarray]:
    index, seed, defect_rate, distractor_rate, view = job
    config = SyntheticConfig(view=view, seed=seed, defect_rate=defect_rate, distractor_rate=distractor_rate)
    image, truth = render_part(index, config)
    small = cv2.resize(image, (INPUT_W, INPUT_H), interpolation=cv2.INTER_AREA)
    w, h = config.width, config.height
    return (small, int(truth["defective"]), truth["label"], cell_targets(truth["defects"], w, h),
            distractor_cells(truth["distractors"], w, h))


def load_split(name: str, count: int, cache: Path, workers: int) -> tuple[np.ndarray, ...]:
    """(images N x H x W uint8, defective N, labels N, cell targets N x h x w, distractor cells N x h x w)

    for a split, rendered once and cached.
    """
    seed, defect_rate, distractor_rate = SPLITS[name]
    path = cache / f"{name}-{seed}-{count}-{INPUT_W}x{INPUT_H}-v5.npz"
    if path.exists():
        data = np.load(path)
        return data["x"], data["y"], data["labels"], data["cells"], data["distractors"]
    # Alternate views so both are equally represented; index i//2 keeps parts distinct per view.
    jobs = [(i // 2, seed, defect_rate, distractor_rate, ("front", "back")[i % 2]) for i in range(count)]
    started = time.monotonic()
    with multiprocessing.Pool(workers) as pool:
        rows = pool.map(_render, jobs, chunksize=16)
    x = np.stack([r[0] for r in rows])
    y = np.array([r[1] for r in rows], np.int64)
    labels = np.array([r[2] for r in rows])
    cells = np.stack([r[3] for r in rows])
    distractors = np.stack([r[4] for r in rows])
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(path, x=x, y=y, labels=labels, cells=cells, distractors=distractors)
    print(f"rendered {name}: {count} frames in {time.monotonic() - started:.0f} s ({y.mean():.0%} defective)")
    return x, y, labels, cells, distractors


# --- model ------------------------------------------------------------------------------


def build_model():  # -> torch.nn.Module; torch is imported lazily (optional extra)
    import torch
    from torch import nn

    def block(cin: int, cout: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))

    class DefectNet(nn.Module):
        """Small fully convolutional CNN: a defect logit per 16x16 cell, the part's is their max.

        One small defect anywhere decides the part, so the part's score is the worst
        cell's. Training also tells cells where the defects are and which are clean,
        which teaches dust and particles apart from defects far faster than part
        labels alone.
        """

        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(
                block(1, 12), nn.MaxPool2d(2),   # 128x160
                block(12, 24), nn.MaxPool2d(2),  # 64x80
                block(24, 32), nn.MaxPool2d(2),  # 32x40
                block(32, 48), nn.MaxPool2d(2),  # 16x20
                block(48, 64),
            )
            self.head = nn.Conv2d(64, 1, 1)

        def cells(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(self.features(x))  # N x 1 x H/16 x W/16 logits

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.amax(self.cells(x), dim=(2, 3))  # N x 1 logit of "defective"

    return DefectNet()


def crops(
    images: np.ndarray, targets: np.ndarray, distractors: np.ndarray, cells: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Cell-aligned square crops, ``cells`` cells wide.

    A third are placed over a defect, a third over dust or a particle (the look-alikes
    the model must learn to let pass), the rest anywhere. Crops cost a fraction of
    whole frames, and the network is fully convolutional: it learns from crops and
    judges whole frames.
    """
    n, gh, gw = targets.shape
    out_x = np.empty((n, cells * CELL, cells * CELL), images.dtype)
    out_t = np.empty((n, cells, cells), targets.dtype)
    for k in range(n):
        pick = rng.random()
        centres = np.argwhere(targets[k] == 1) if pick < 1 / 3 else np.argwhere(distractors[k]) if pick < 2 / 3 else ()
        if len(centres):
            r, c = centres[rng.integers(len(centres))]
            r0 = int(np.clip(r - rng.integers(cells), 0, gh - cells))
            c0 = int(np.clip(c - rng.integers(cells), 0, gw - cells))
        else:
            r0, c0 = int(rng.integers(gh - cells + 1)), int(rng.integers(gw - cells + 1))
        out_x[k] = images[k, r0 * CELL : (r0 + cells) * CELL, c0 * CELL : (c0 + cells) * CELL]
        out_t[k] = targets[k, r0 : r0 + cells, c0 : c0 + cells]
    return out_x, out_t


def to_tensor(images: np.ndarray):
    import torch

    x = torch.from_numpy(images).float().unsqueeze(1)
    return (x / 255.0 - MEAN) / STD


def flipped_batch(images: np.ndarray, cell_target: np.ndarray, rng: np.random.Generator) -> tuple[Any, Any]:
    """The batch as tensors, flipped at random: flips keep the defect/distractor
    distinction and double the pose variety."""
    import torch

    if rng.random() < 0.5:
        images, cell_target = images[:, :, ::-1], cell_target[:, :, ::-1]
    if rng.random() < 0.5:
        images, cell_target = images[:, ::-1, :], cell_target[:, ::-1, :]
    x = to_tensor(np.ascontiguousarray(images))
    return x, torch.from_numpy(np.ascontiguousarray(cell_target)).unsqueeze(1)


def predict(model, images: np.ndarray, batch: int = 64, flips: bool = True) -> np.ndarray:
    """P(defective) per frame; with ``flips``, the geometric mean over the four flips, as exported."""
    import torch

    model.eval()
    wrapped = FlipAveraged(model) if flips else None
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = to_tensor(images[i : i + batch])
            out.append((wrapped(x) if wrapped else torch.sigmoid(model(x))).squeeze(1).numpy())
    return np.concatenate(out)


def FlipAveraged(model):  # -> torch.nn.Module; a factory so torch stays an optional import
    """The model's P(defective) as the geometric mean over the frame and its three flips.

    A defect looks like a defect in any flip, while the borderline cells of a clean
    part rarely fire in all four: averaging the log-probabilities steadies the scores.
    """
    import torch

    class _FlipAveraged(torch.nn.Module):
        def __init__(self, inner: torch.nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            views = [x, torch.flip(x, dims=[3]), torch.flip(x, dims=[2]), torch.flip(x, dims=[2, 3])]
            logp = [torch.nn.functional.logsigmoid(self.inner(v)) for v in views]
            return torch.exp(torch.stack(logp).mean(dim=0))

    return _FlipAveraged(model)


def metrics(scores: np.ndarray, y: np.ndarray, threshold: float) -> dict[str, float]:
    pred = scores >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    tn = int(np.sum(~pred & (y == 0)))
    return {
        "accuracy": (tp + tn) / len(y),
        "precision": tp / max(tp + fp, 1),
        "recall": tp / max(tp + fn, 1),
        "tp": tp, "fp": fp, "fn": fn, "tn": tn,
    }


def choose_threshold(scores: np.ndarray, y: np.ndarray, min_recall: float) -> float:
    """The highest threshold that keeps validation recall at ``min_recall``, lowered by a margin.

    The margin (10% of that score) leaves room for defects slightly fainter than any
    in the validation set: a false reject costs far less than a missed defect.
    """
    defect_scores = np.sort(scores[y == 1])
    allowed_misses = int(np.floor((1 - min_recall) * len(defect_scores)))
    return float(defect_scores[allowed_misses] * 0.9)


# --- training -------------------------------------------------------------------------------


def train(args: argparse.Namespace) -> dict:
    import torch
    from torch import nn

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    x_train, y_train, _, cells_train, distractors_train = load_split("train", args.train, cache, args.workers)
    x_val, y_val = load_split("val", args.val, cache, args.workers)[:2]

    model = build_model()
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps = args.epochs * int(np.ceil(len(x_train) / args.batch))
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=args.lr, total_steps=steps)
    # Misses cost more than false rejects: weigh defective examples up.
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([args.defect_weight]))
    # About one defect cell per defective part against hundreds of clean ones.
    cell_loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([args.cell_defect_weight]))
    rng = np.random.default_rng(args.seed)
    best: tuple[float, dict] | None = None
    for epoch in range(args.epochs):
        model.train()
        started = time.monotonic()
        order = rng.permutation(len(x_train))
        total = total_part = 0.0
        for i in range(0, len(order), args.batch):
            idx = order[i : i + args.batch]
            images, cell_target = crops(x_train[idx], cells_train[idx], distractors_train[idx], args.crop // CELL, rng)
            x, cell_target = flipped_batch(images, cell_target, rng)
            optimiser.zero_grad()
            cells = model.cells(x)
            # A crop is defective if it holds a defect's centre, clean if every cell is
            # clean; a crop that only grazes a defect gives no crop-level target.
            has_defect = (cell_target == 1).flatten(1).any(dim=1)
            all_clean = (cell_target == 0).flatten(1).all(dim=1)
            labelled = has_defect | all_clean
            part_loss = loss_fn(torch.amax(cells, dim=(2, 3))[labelled], has_defect[labelled].float().unsqueeze(1))
            trained = cell_target >= 0
            cell_loss = cell_loss_fn(cells[trained], cell_target[trained].float())
            loss = part_loss + args.cell_weight * cell_loss
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
            total_part += float(part_loss.detach()) * len(idx)
        line = f"epoch {epoch + 1}/{args.epochs}: loss {total / len(x_train):.4f} (crops {total_part / len(x_train):.4f})"
        if (epoch + 1) % args.val_every == 0 or epoch + 1 == args.epochs:
            scores = predict(model, x_val, flips=False)  # picks the epoch; flips only for the export
            threshold = choose_threshold(scores, y_val, args.min_recall)
            m = metrics(scores, y_val, threshold)
            at_half = metrics(scores, y_val, 0.5)
            line += (f", val accuracy {m['accuracy']:.4f} at threshold {threshold:.4f} (recall {m['recall']:.4f}),"
                     f" {at_half['accuracy']:.4f} at 0.5 (recall {at_half['recall']:.4f})")
            if best is None or m["accuracy"] >= best[0]:
                best = (m["accuracy"], {k: v.clone() for k, v in model.state_dict().items()})
                torch.save(best[1], cache / "best.pt")  # lets --resume re-export without retraining
        print(f"{line} ({time.monotonic() - started:.0f} s)", flush=True)
    assert best is not None
    model.load_state_dict(best[1])
    val_scores = predict(model, x_val)
    threshold = choose_threshold(val_scores, y_val, args.threshold_recall)
    return {"model": model, "threshold": threshold, "val": metrics(val_scores, y_val, threshold)}


def finetune(model, args: argparse.Namespace) -> None:
    """A few epochs on whole frames at a low rate: crops teach the cells, whole frames calibrate the part score.

    A clean part has some 300 cells that could fire; only whole frames show the
    model that its part score is the highest of them all.
    """
    import torch
    from torch import nn

    x_train, y_train, _, cells_train = load_split("train", args.train, Path(args.cache), args.workers)[:4]
    optimiser = torch.optim.AdamW(model.parameters(), lr=args.finetune_lr, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([args.defect_weight]))
    cell_loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([args.cell_defect_weight]))
    rng = np.random.default_rng(args.seed + 1)
    batch = max(8, args.batch // 4)
    for epoch in range(args.finetune_epochs):
        model.train()
        started = time.monotonic()
        total = 0.0
        order = rng.permutation(len(x_train))
        for i in range(0, len(x_train), batch):
            idx = order[i : i + batch]
            x, cell_target = flipped_batch(x_train[idx], cells_train[idx], rng)
            cells = model.cells(x)
            part_loss = loss_fn(torch.amax(cells, dim=(2, 3)), torch.from_numpy(y_train[idx]).float().unsqueeze(1))
            trained = cell_target >= 0
            loss = part_loss + args.cell_weight * cell_loss_fn(cells[trained], cell_target[trained].float())
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        print(f"whole-frame epoch {epoch + 1}/{args.finetune_epochs}: loss {total / len(x_train):.4f} "
              f"({time.monotonic() - started:.0f} s)", flush=True)


def from_checkpoint(args: argparse.Namespace) -> dict:
    """Weights saved by an earlier run (fine-tuned on whole frames if asked), threshold chosen again."""
    import torch

    torch.set_num_threads(args.threads)
    model = build_model()
    model.load_state_dict(torch.load(args.checkpoint))
    if args.finetune_epochs:
        finetune(model, args)
    x_val, y_val = load_split("val", args.val, Path(args.cache), args.workers)[:2]
    scores = predict(model, x_val)
    threshold = choose_threshold(scores, y_val, args.threshold_recall)
    return {"model": model, "threshold": threshold, "val": metrics(scores, y_val, threshold)}


def export(model, path: Path, threshold: float, version: str, opset: int) -> None:
    import onnx
    import torch

    model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        FlipAveraged(model), torch.zeros(1, 1, INPUT_H, INPUT_W), str(path),
        input_names=["image"], output_names=["defect_probability"],
        dynamic_axes={"image": {0: "batch"}, "defect_probability": {0: "batch"}},
        opset_version=opset, dynamo=False,
    )
    proto = onnx.load(str(path))
    meta = {
        "graphrun.name": "finger-follower-defects",
        "graphrun.version": version,
        "graphrun.threshold": f"{threshold:.6f}",
        "graphrun.labels": "ok,defect",
        "graphrun.preprocess": json.dumps(PREPROCESS),
    }
    del proto.metadata_props[:]
    for key, value in meta.items():
        proto.metadata_props.add(key=key, value=value)
    proto.doc_string = "Finger-follower surface defects vs dust and particles; output: P(defective)."
    onnx.save(add_defect_map(proto), str(path))  # where the defect is, for the operator's screen


def evaluate(path: Path, args: argparse.Namespace) -> dict:
    """Held-out figures, computed with ONNX Runtime on the exported file: what ships is what is measured."""
    import onnxruntime as ort

    x_test, y_test, labels = load_split("test", args.test, Path(args.cache), args.workers)[:3]
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    threshold = float(meta["graphrun.threshold"])
    scores = np.concatenate([
        session.run(None, {"image": ((x_test[i : i + 64, None].astype(np.float32) / 255 - MEAN) / STD)})[0][:, 0]
        for i in range(0, len(x_test), 64)
    ])
    result = metrics(scores, y_test, threshold)
    result["threshold"] = threshold
    result["count"] = int(len(y_test))
    result["missed_by_kind"] = {
        kind: int(np.sum((labels == kind) & (scores < threshold))) for kind in sorted(set(labels.tolist())) if kind != "ok"
    }
    result["false_rejects"] = int(np.sum((y_test == 0) & (scores >= threshold)))
    # load_split alternates the views: even frames are front views, odd ones back views.
    views = np.array(["front", "back"])[np.arange(len(y_test)) % 2]
    result["by_view"] = {view: metrics(scores[views == view], y_test[views == view], threshold) for view in ("front", "back")}
    result["by_kind"] = {
        kind: {"count": int(np.sum(labels == kind)), "judged_defective": int(np.sum((labels == kind) & (scores >= threshold)))}
        for kind in sorted(set(labels.tolist()))
    }
    result["good_score_max"] = {view: float(scores[(y_test == 0) & (views == view)].max()) for view in ("front", "back")}
    result["defect_score_min"] = float(scores[y_test == 1].min()) if np.any(y_test == 1) else None
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("agents/classification/models/finger_follower_defects.onnx"))
    parser.add_argument("--cache", default="/tmp/graphrun-defects-cache", help="rendered frames (.npz), outside the repo")
    parser.add_argument("--train", type=int, default=4000)
    parser.add_argument("--val", type=int, default=600)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--defect-weight", type=float, default=3.0)
    parser.add_argument("--crop", type=int, default=128, help="training crop size in input pixels (multiple of 16)")
    parser.add_argument("--val-every", type=int, default=5, help="validate every this many epochs")
    parser.add_argument("--cell-weight", type=float, default=1.0, help="weight of the per-cell loss")
    parser.add_argument("--cell-defect-weight", type=float, default=6.0, help="weight of a defect cell vs a clean one")
    parser.add_argument("--min-recall", type=float, default=0.99, help="validation recall that picks the epoch")
    parser.add_argument("--threshold-recall", type=float, default=1.0,
                        help="validation recall the shipped threshold keeps (1.0: every validation defect, then the margin)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="processes rendering frames")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--version", default="2")
    parser.add_argument("--finetune-epochs", type=int, default=0, help="whole-frame epochs after the crops")
    parser.add_argument("--finetune-lr", type=float, default=3e-4)
    parser.add_argument("--checkpoint", type=Path, help="skip training: export these weights (a best.pt of an earlier run)")
    parser.add_argument("--evaluate-only", action="store_true", help="report held-out figures for --out")
    args = parser.parse_args()
    if args.checkpoint:
        result = from_checkpoint(args)
        export(result["model"], args.out, result["threshold"], args.version, args.opset)
        print(f"validation at threshold {result['threshold']:.4f}: {json.dumps(result['val'])}")
    elif not args.evaluate_only:
        result = train(args)
        export(result["model"], args.out, result["threshold"], args.version, args.opset)
        print(f"validation at threshold {result['threshold']:.4f}: {json.dumps(result['val'])}")
        print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.0f} KiB)")
    print(f"held-out test: {json.dumps(evaluate(args.out, args))}")


if __name__ == "__main__":
    main()
