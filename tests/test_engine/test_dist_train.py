"""``tools/dist_train.sh`` on 2 CPU processes (gloo): the AQD benchmark config trains, and parameters, optimizer and
quantizer state (ranges, ``initialized`` and signedness flags) are equal on both ranks after training; the
data-driven initialisation is the mean of what each rank computes from its own batch (so a lost division by the
world size in ``sync_mean_`` fails here). Also the CPU set-up of ``--launcher pytorch`` (mmaqd.engine.distributed).
"""
import copy
import os
import os.path as osp
import socket
import subprocess
import sys
import time

import pytest
import torch
from mmengine.config import Config

from conftest import ROOT
from mmaqd.engine.distributed import cpu_backend, cpu_model_wrapper_cfg, init_cpu_distributed

CONFIG = 'configs/aqd/fcos_r18-c32_fpn_aqd-w4a4_synth.py'
ITERS = 3
# plain BN (the benchmark configs use BN, not SyncBN) keeps per-process running statistics, as mmengine's DDP
# default (broadcast_buffers=False) does on GPUs; rank 0 writes the checkpoints
PER_RANK = ('running_mean', 'running_var')

DERIVED = """_base_ = {base!r}
custom_imports = dict(imports=['mmaqd', 'dist_probe'], allow_failed_imports=False)
custom_hooks = [dict(type='QuantizerInitHook'), dict(type='DistProbeHook', out_dir={probe!r})]
load_from = None  # random init (broadcast from rank 0); no FP checkpoint needed to compare ranks
randomness = dict(seed=0)
train_cfg = dict(max_iters={iters}, val_interval={iters})
param_scheduler = [dict(type='ConstantLR', factor=1.0, by_epoch=False, begin=0, end={iters})]
default_hooks = dict(checkpoint=dict(interval={iters}), logger=dict(interval=1))
loader = dict(batch_size=2, num_workers=0, persistent_workers=False)
train_pipeline = [  # small images: the probe saves every quantizer's first input
    dict(type='LoadImageFromFile'), dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(96, 96), keep_ratio=True), dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs')]
train_dataloader = dict(loader, dataset=dict(data_root={root!r}, pipeline=train_pipeline))
val_dataloader = dict(loader, dataset=dict(data_root={root!r}))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file={root!r} + 'annotations/instances_val.json')
test_evaluator = val_evaluator
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def two_rank_run(tiny_coco, tmp_path_factory):
    """Train the AQD config for ITERS iterations with ``tools/dist_train.sh CONFIG 2``; the two ranks' records."""
    tmp = tmp_path_factory.mktemp('dist_train')
    probe, work_dir, cfg_path = tmp / 'probe', tmp / 'work', tmp / 'aqd_2proc.py'
    cfg_path.write_text(DERIVED.format(base=osp.join(ROOT, CONFIG), probe=str(probe), iters=ITERS,
                                       root=tiny_coco.rstrip('/') + '/'))
    env = dict(os.environ, PYTHON=sys.executable, PORT=str(_free_port()), OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(filter(None, [osp.join(ROOT, 'tests'), os.environ.get('PYTHONPATH')])))
    start = time.time()
    proc = subprocess.run(['bash', 'tools/dist_train.sh', str(cfg_path), '2', '--work-dir', str(work_dir)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-6000:]
    records = [torch.load(probe / f'rank{r}.pth', weights_only=False) for r in range(2)]
    return dict(records=records, work_dir=work_dir, out=out, seconds=time.time() - start)


def _equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b))
    return a == b


def test_two_cpu_processes_train_with_gloo(two_rank_run):
    r0, r1 = two_rank_run['records']
    assert (r0['rank'], r1['rank']) == (0, 1) and r0['world_size'] == r1['world_size'] == 2
    assert r0['iter'] == r1['iter'] == ITERS
    assert osp.isfile(two_rank_run['work_dir'] / f'iter_{ITERS}.pth')
    assert "'backend': 'gloo'" in two_rank_run['out']


def test_ranks_end_with_equal_parameters_optimizer_and_quantizer_state(two_rank_run):
    r0, r1 = two_rank_run['records']
    s0, s1 = r0['state_dict'], r1['state_dict']
    assert s0.keys() == s1.keys()
    compared = [k for k in s0 if not k.endswith(PER_RANK)]
    differ = [k for k in compared if not torch.equal(s0[k], s1[k])]
    assert not differ, f'{len(differ)} of {len(compared)} tensors differ between the ranks: {differ[:10]}'
    for suffix in ('_quantizer.alpha', '_quantizer.initialized', '_quantizer.signed_flag'):
        assert any(k.endswith(suffix) for k in compared), suffix
    assert all(bool(s0[k]) for k in s0 if k.endswith('_quantizer.initialized'))
    assert _equal(r0['optimizer'], r1['optimizer'])
    assert r0['optimizer']['state'], 'the optimizer stepped'


def test_data_driven_init_is_the_mean_over_ranks(two_rank_run):
    r0, r1 = two_rank_run['records']
    assert r0['after_init'].keys() == r1['after_init'].keys()
    for name, state in r0['after_init'].items():  # equal on both ranks before the first optimizer step
        assert _equal(state, r1['after_init'][name]), name
    names = sorted(set(r0['inputs']) & set(r1['inputs']))
    assert len(names) >= 0.9 * len(r0['fresh']), f'{len(names)} of {len(r0["fresh"])} quantizers recorded'
    own_data, acts = 0, 0
    for name in names:
        run = r0['after_init'][name]
        local = []
        for record in (r0, r1):  # what the rank's own batch gives, without a process group (no averaging)
            q = copy.deepcopy(record['fresh'][name])
            q.signed_flag.copy_(run['signed_flag'])  # the (synchronised) signedness the run chose
            with torch.no_grad():
                q(record['inputs'][name])
            local.append(q.state_dict())
        ranges = [k for k, v in run.items() if v.is_floating_point()]
        assert ranges, name
        for key in ranges:
            mean = (local[0][key] + local[1][key]) / 2
            assert torch.allclose(run[key], mean, rtol=1e-5, atol=0), (
                f'{name}.{key}: the run initialised {run[key].flatten()[:4].tolist()}, but the mean over the ranks '
                f'of their own initialisations is {mean.flatten()[:4].tolist()} (rank 0: '
                f'{local[0][key].flatten()[:4].tolist()}, rank 1: {local[1][key].flatten()[:4].tolist()})')
        if r0['fresh'][name].role == 'act':
            acts += 1
            own_data += not torch.equal(local[0][ranges[0]], local[1][ranges[0]])
    assert own_data > 0.5 * acts > 0, f'{own_data} of {acts} activation quantizers saw different data on the ranks'


def test_the_run_stays_short(two_rank_run):
    assert two_rank_run['seconds'] < 120, f"2-process training took {two_rank_run['seconds']:.0f} s"


# --------------------------------------------------------------------------- CPU set-up of --launcher pytorch
def _cfg(**kwargs) -> Config:
    return Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl')), **kwargs))


def test_nccl_becomes_gloo_and_other_backends_are_named():
    assert cpu_backend(dict(backend='nccl')) == 'gloo' and cpu_backend({}) == 'gloo'
    with pytest.raises(ValueError, match="backend='hccl'.*'gloo'"):
        cpu_backend(dict(backend='hccl'))


def test_cpu_model_wrapper_has_no_device_ids():
    assert cpu_model_wrapper_cfg(_cfg()) == dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                                                 find_unused_parameters=False, device_ids=None)
    own = cpu_model_wrapper_cfg(_cfg(model_wrapper_cfg=dict(type='MMDistributedDataParallel',
                                                            find_unused_parameters=True)))
    assert own == dict(type='MMDistributedDataParallel', find_unused_parameters=True, device_ids=None)
    with pytest.raises(ValueError, match=r'device_ids=\[0\] names GPUs'):
        cpu_model_wrapper_cfg(_cfg(model_wrapper_cfg=dict(device_ids=[0])))


def test_init_changes_nothing_without_a_launcher_or_with_cuda(monkeypatch):
    cfg = _cfg()
    assert init_cpu_distributed(cfg, 'none') is None
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert init_cpu_distributed(cfg, 'pytorch') is None  # mmengine starts NCCL on the GPUs as before
    assert cfg.env_cfg.dist_cfg.backend == 'nccl' and 'model_wrapper_cfg' not in cfg


def test_init_names_what_a_cpu_run_lacks(monkeypatch):
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    with pytest.raises(ValueError, match='--launcher slurm needs CUDA GPUs.*--launcher pytorch'):
        init_cpu_distributed(_cfg(), 'slurm')
    for name in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT', 'LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="'RANK'.*torch.distributed.run"):
        init_cpu_distributed(_cfg(), 'pytorch')
