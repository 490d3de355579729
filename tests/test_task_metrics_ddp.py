"""Binary and multilabel segmentation metrics under DDP: 2 CPU processes over gloo, each counting
an unequal part of the split, compute() on every rank equal to one process counting it all."""

import datetime

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from seglight.metrics import BinarySegmentationMetrics, MultilabelSegmentationMetrics

IGNORE = 255
WORLD = 2


def split_batches(kind: str) -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    """[batches of rank 0, batches of rank 1]: (probs, target) pairs, unequal in count and size
    (rank 0: 1 image of 9x7 and an all-ignored one; rank 1: 5 images of 12x10 in 2 updates)."""
    gen = torch.Generator().manual_seed(0 if kind == "binary" else 1)
    labels = () if kind == "binary" else (3,)

    def batch(b: int, h: int, w: int, ignored: float = 0.15):
        shape = (b, *labels, h, w)
        target = torch.randint(0, 2, shape, generator=gen)
        probs = 0.4 * target + 0.6 * torch.rand(shape, generator=gen, dtype=torch.float64)
        target[torch.rand(shape, generator=gen) < ignored] = IGNORE
        return probs, target

    return [[batch(1, 9, 7), batch(1, 9, 7, ignored=1.0)], [batch(3, 12, 10), batch(2, 12, 10)]]


def make(kind: str):
    return (
        BinarySegmentationMetrics(0.5)
        if kind == "binary"
        else MultilabelSegmentationMetrics(3, 0.3)
    )


def worker(rank: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD,
        timeout=datetime.timedelta(seconds=60),
    )  # fmt: skip
    try:
        results = {}
        for kind in ("binary", "multilabel"):
            metric = make(kind)
            for probs, target in split_batches(kind)[rank]:
                metric.update(probs, target)
            synced = metric.compute()
            local = {k: getattr(metric, k).clone() for k in ("tp", "fp", "fn", "tn")}
            results[kind] = {"synced": synced, "local": local}
        torch.save(results, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_every_rank_computes_the_single_process_result(tmp_path):
    # fork where there is one: the children start with torch and seglight already imported
    # (a spawned child re-imports them, ~10 s on a busy 2-core machine).
    fork = "fork" in mp.get_all_start_methods() and not dist.is_initialized()
    method = "fork" if fork else "spawn"
    args = (str(tmp_path / "rendezvous"), str(tmp_path))
    mp.start_processes(worker, args=args, nprocs=WORLD, start_method=method)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    for kind in ("binary", "multilabel"):
        single = make(kind)
        for part in split_batches(kind):
            for probs, target in part:
                single.update(probs, target)
        expected = single.compute()
        local = [r[kind]["local"] for r in ranks]
        assert local[0]["tp"].sum() < local[1]["tp"].sum()  # the parts were really unequal
        for rank in ranks:
            got = rank[kind]["synced"]
            assert got.keys() == expected.keys()
            for key, value in expected.items():  # counts exactly, floats bit for bit
                assert got[key].dtype == value.dtype, key
                torch.testing.assert_close(got[key], value, rtol=0, atol=0, equal_nan=True)
        for name in ("tp", "fp", "fn", "tn"):  # compute() left each rank's own counts in place
            assert torch.equal(local[0][name] + local[1][name], getattr(single, name)), name
