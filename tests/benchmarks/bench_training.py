"""One epoch of each trainer: in-memory index batches vs the seeds' DataLoader + ToTensor.

Both paths train the same model (same seed, same hyper-parameters) in this one
process, alternating, so the ratio is measured under the same conditions. Each side
is timed over ``--repeats`` epochs and its median epoch counts.
The DataLoader side is timed with 0 worker processes (the MLP seed's way) and with
one worker per core (the d2l seed's way); the ratio is taken against the faster one.
A trainer whose config standardizes its inputs (``--standardize``) gets ``Normalize`` on the DataLoader side.
It also prints each MLP epoch against its arithmetic floor: the epoch's FLOPs divided
by the matmul FLOP/s measured here; and a model file of one's own (``--trainers
lenet.py``) against its floor from its convolutions' and linear layers' FLOPs, each
over the FLOP/s measured here for that kind of layer.

Run: python tests/benchmarks/bench_training.py [--trainers mlp,nn-softmax,lenet.py] [--data-dir DIR]
"""

from __future__ import annotations

import os
import time

os.environ.setdefault("TQDM_DISABLE", "1")  # progress bars would interleave with the table

import click
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from trainers.catalog import DATASETS, TRAINERS, trainer_of
from trainers.core.data import load
from trainers.core.loop import Parts, Progress, evaluate, fit
from trainers.core.training import as_configured, build


def dataloader_epoch(parts: Parts, train_set, test_set, batch_size: int, workers: int) -> tuple[float, float]:
    """The seeds' loop: one epoch over a DataLoader, then test accuracy; returns (seconds, accuracy)."""
    started = time.perf_counter()
    for images, labels in DataLoader(train_set, batch_size, shuffle=True, num_workers=workers):
        loss = parts.loss(parts.model(images), labels)
        parts.optimizer.zero_grad()
        loss.backward()
        parts.optimizer.step()
    correct = 0
    with torch.no_grad():
        for images, labels in DataLoader(test_set, 1024, num_workers=workers):
            correct += (parts.model(images).argmax(dim=1) == labels).sum().item()
    return time.perf_counter() - started, correct / len(test_set)


def median_run(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """The (seconds, accuracy) of the run with the median time."""
    return sorted(runs)[(len(runs) - 1) // 2]


def matmul_flops() -> float:
    """Measured float32 matmul FLOP/s of this machine (best of several 1024^3 products)."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(20):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * 1024**3 / best


def conv_flops() -> float:
    """Measured float32 convolution FLOP/s of this machine (best of several 5x5 convolutions of 160 images)."""
    images, conv = torch.randn(160, 6, 14, 14), torch.nn.Conv2d(6, 16, 5)
    best = float("inf")
    with torch.no_grad():
        for _ in range(20):
            started = time.perf_counter()
            conv(images)
            best = min(best, time.perf_counter() - started)
    return 2 * 160 * 16 * 10 * 10 * 6 * 25 / best


def layer_flops(model: torch.nn.Module, images: torch.Tensor) -> dict[str, int]:
    """Forward FLOPs per image of the model's convolutions and linear layers (2 per multiply-add), by kind."""
    found = {"conv": 0, "linear": 0}

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d):
            kernel = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            found["conv"] += 2 * output[0].numel() * kernel
        else:
            found["linear"] += 2 * module.in_features * module.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
    with torch.no_grad():
        model.eval()
        model(images[:1])
        model.train()
    for hook in hooks:
        hook.remove()
    return found


def epoch_flops(sizes: tuple[int, ...], samples: int) -> int:
    """Forward (2 per multiply-add) + backward (grad of weights, and of inputs but for the first layer)."""
    total = 0
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        total += (6 if i else 4) * samples * fan_in * fan_out
    return total


@click.command()
@click.option("--trainers", "names", default=",".join(TRAINERS), show_default=True)
@click.option("--data-dir", type=click.Path(), default=None)
@click.option("--repeats", type=click.IntRange(1), default=2, show_default=True, help="Epochs timed per side.")
def main(names: str, data_dir: str | None, repeats: int):
    """Print per-trainer epoch times, their ratio and both accuracies."""
    data = load("fashion-mnist", data_dir and os.path.abspath(data_dir), torch.device("cpu"))
    cls = getattr(datasets, DATASETS["fashion-mnist"].torchvision_name)
    # Each trainer's samples as its runs see them: in [0, 1], or standardized.
    in_unit = transforms.ToTensor()
    mean, std = data.train.statistics()
    standard = transforms.Compose([in_unit, transforms.Normalize((mean,), (std,))])
    loaders = {standardize: [cls(data.source, train=train, transform=standard if standardize else in_unit)
                             for train in (True, False)] for standardize in (False, True)}
    peak, conv_peak = matmul_flops(), conv_flops()
    cores = os.cpu_count() or 1
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, matmul {peak / 1e9:.1f} GFLOP/s, "
          f"convolution {conv_peak / 1e9:.1f} GFLOP/s, "
          f"median of {repeats} epochs per side")
    print(f"{'trainer':<16}{'in-memory':>11}{'DL w=0':>9}{f'DL w={cores}':>9}{'speed-up':>10}"
          f"{'acc mem':>9}{'acc DL':>8}")
    for name in names.split(","):
        trainer = trainer_of(name)
        config = trainer.config(trainer=trainer.name)
        seen = as_configured(config, data)
        train_set, test_set = loaders[config.standardize]
        name = trainer.name if name in TRAINERS else os.path.basename(name)
        ours, baseline = [], {0: [], cores: []}
        for _ in range(repeats):
            torch.manual_seed(0)
            parts = build(config, torch.device("cpu"))
            started = time.perf_counter()
            fit(parts, seen, epochs=1, batch_size=config.batch_size,
                generator=torch.Generator().manual_seed(0), progress=Progress())
            ours.append((time.perf_counter() - started, evaluate(parts, seen.test).accuracy))
            for workers in baseline:
                torch.manual_seed(0)
                parts = build(config, torch.device("cpu"))
                baseline[workers].append(dataloader_epoch(parts, train_set, test_set, config.batch_size, workers))
        best, accuracy = median_run(ours)
        dl = {workers: median_run(runs) for workers, runs in baseline.items()}
        fastest = min(seconds for seconds, _ in dl.values())
        print(f"{name:<16}{best:>10.2f}s{dl[0][0]:>8.2f}s{dl[cores][0]:>8.2f}s"
              f"{fastest / best:>9.1f}x{accuracy:>9.4f}{dl[0][1]:>8.4f}")
        if hasattr(config, "hidden"):
            floor = epoch_flops((784, *config.hidden, 10), len(data.train)) / peak
            print(f"{'':<16}arithmetic floor {floor:.3f}s: the in-memory epoch takes {best / floor:.1f}x the floor")
        elif name not in TRAINERS and isinstance(parts.model, torch.nn.Module):
            # backward costs about twice the forward: 3x the forward's FLOPs in all
            per_image = layer_flops(parts.model, seen.train.floats(seen.train.pixels[:1]))
            floor = 3 * len(data.train) * (per_image["conv"] / conv_peak + per_image["linear"] / peak)
            print(f"{'':<16}arithmetic floor {floor:.3f}s ({per_image['conv'] / 1e6:.2f} MFLOP of convolutions, "
                  f"{per_image['linear'] / 1e6:.2f} of linear layers a forward image): the in-memory epoch takes "
                  f"{best / floor:.1f}x the floor")


if __name__ == "__main__":
    main()
