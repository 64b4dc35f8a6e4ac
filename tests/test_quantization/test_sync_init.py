"""Data-driven quantizer initialisation across 2 processes (gloo, CPU): ranges are averaged (``sync_mean_``) and
signedness taken from the first batch of any rank (``sync_any``), so that every rank builds the same grid."""
import multiprocessing as mp
import os.path as osp
import socket

import torch
import torch.distributed as dist

from mmaqd.quantization.quantizers import LIQ
from mmaqd.quantization.quantizers.utils import sync_any, sync_mean_


def _worker(rank: int, port: int, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank, world_size=2)
    try:
        torch.manual_seed(rank)
        mean = sync_mean_(torch.tensor([1.0 + rank, 10.0]))
        any_flags = [sync_any(rank == 1), sync_any(False), sync_any(True)]
        # rank 0's batch holds no negative value, rank 1's does: both must pick the signed grid
        mixed = LIQ(4, signed=None, role='act')
        x = torch.rand(2, 3, 8, 8) if rank == 0 else torch.randn(2, 3, 8, 8)
        mixed(x)
        positive = LIQ(4, signed=None, role='act')
        positive(torch.rand(2, 3, 8, 8))
        torch.save(dict(mean=mean, any=any_flags, mixed=mixed.state_dict(), positive=positive.state_dict()),
                   osp.join(out_dir, f'rank{rank}.pt'))
    finally:
        dist.destroy_process_group()


def _run_two_ranks(out_dir: str) -> list:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        port = s.getsockname()[1]
    ctx = mp.get_context('spawn')
    procs = [ctx.Process(target=_worker, args=(rank, port, out_dir)) for rank in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    for p in procs:
        if p.is_alive():
            p.terminate()
    assert [p.exitcode for p in procs] == [0, 0]
    return [torch.load(osp.join(out_dir, f'rank{r}.pt'), weights_only=True) for r in range(2)]


def test_two_ranks_agree_on_ranges_and_signedness(tmp_path):
    r0, r1 = _run_two_ranks(str(tmp_path))
    for r in (r0, r1):
        assert torch.equal(r['mean'], torch.tensor([1.5, 10.0]))  # the mean, not the sum
        assert r['any'] == [True, False, True]
        assert int(r['mixed']['signed_flag']) == 1  # one rank saw a negative value: signed on both
        assert int(r['positive']['signed_flag']) == 0
    for name in ('mixed', 'positive'):
        for key in r0[name]:
            assert torch.equal(r0[name][key], r1[name][key]), f'{name}.{key}'


def test_without_a_process_group_nothing_is_synchronised():
    t = torch.tensor([3.0])
    assert sync_mean_(t) is t and torch.equal(t, torch.tensor([3.0]))
    assert sync_any(True) is True and sync_any(0) is False
