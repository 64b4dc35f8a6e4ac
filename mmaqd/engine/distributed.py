"""Multi-process training on CPU processes (gloo) as well as on GPUs (NCCL): what ``--launcher pytorch`` needs.

mmengine assumes one GPU per process. ``init_dist`` calls ``torch.cuda.set_device(LOCAL_RANK)`` before it starts
the process group, which fails on a CPU-only machine (``torch._C has no attribute _cuda_setDevice``), and the
Runner wraps the model in DDP with ``device_ids=[LOCAL_RANK]``, which names a GPU. :func:`init_cpu_distributed`
does what ``init_dist`` would on a machine without CUDA: it starts the process group itself with gloo (mmengine's
``Runner.setup_env`` then finds it started and keeps it) and sets ``model_wrapper_cfg.device_ids=None`` (DDP
of a CPU module). On a machine with CUDA it changes nothing: mmengine starts NCCL (or the config's
``env_cfg.dist_cfg.backend``) as before.

    bash tools/dist_train.sh configs/aqd/fcos_r18-c32_fpn_aqd-w4a4_synth.py 2   # two CPU processes, gloo

Gradients are averaged by DDP, data-driven quantizer ranges by :func:`mmaqd.quantization.quantizers.utils.
sync_mean_`, so parameters and quantizer state stay equal on every process. Plain BN layers (the generated-
benchmark ``*_synth`` configs) keep per-process running statistics, as under mmengine's default
``broadcast_buffers=False`` on GPUs; checkpoints are written by rank 0. torch's SyncBatchNorm has no CPU kernels
(DDP refuses it: "SyncBatchNorm layers only work with GPU modules"), so the COCO configs' SyncBN heads need GPUs.
"""
import datetime
import os
from typing import Optional

import torch
import torch.distributed as dist
from mmengine.config import Config

CPU_BACKEND = 'gloo'
ENV_VARS = ('RANK', 'LOCAL_RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT')


def cpu_backend(dist_cfg: dict) -> str:
    """The process-group backend for CPU processes: ``gloo`` for the config's ``nccl`` (mmdet's default, GPU
    only) or ``gloo``; any other value raises a ValueError naming it."""
    backend = dist_cfg.get('backend', 'nccl')
    if backend not in ('nccl', CPU_BACKEND):
        raise ValueError(f"env_cfg.dist_cfg.backend={backend!r} cannot run on CPU processes (no CUDA here); "
                         f"use {CPU_BACKEND!r} (or 'nccl', which becomes {CPU_BACKEND!r} on CPU)")
    return CPU_BACKEND


def cpu_model_wrapper_cfg(cfg: Config) -> dict:
    """``cfg.model_wrapper_cfg`` with ``device_ids=None`` (DDP of a CPU module); mmengine's default DDP
    arguments (``broadcast_buffers=False``, the config's ``find_unused_parameters``) when the config has none."""
    wrapper = cfg.get('model_wrapper_cfg')
    if wrapper is None:
        wrapper = dict(type='MMDistributedDataParallel', broadcast_buffers=False,
                       find_unused_parameters=cfg.get('find_unused_parameters', False))
    wrapper = dict(wrapper)
    if wrapper.get('device_ids') is not None:
        raise ValueError(f"model_wrapper_cfg.device_ids={wrapper['device_ids']!r} names GPUs, but this machine has "
                         'no CUDA device; remove it (CPU processes need device_ids=None)')
    wrapper['device_ids'] = None
    return wrapper


def init_cpu_distributed(cfg: Config, launcher: str) -> Optional[str]:
    """Start the process group of a ``launcher='pytorch'`` run on a machine without CUDA; returns its backend.

    Returns ``None`` and changes nothing when ``launcher`` is ``'none'``, when CUDA is available (mmengine starts
    the process group) or when the group is already started. Otherwise starts it from the launcher's environment
    (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``, set by ``torch.distributed.run``) with gloo and
    the other ``env_cfg.dist_cfg`` arguments (``timeout`` in seconds), and sets ``cfg.model_wrapper_cfg`` and
    ``cfg.env_cfg.dist_cfg.backend`` to what was used. The slurm and mpi launchers need GPUs (ValueError).
    """
    if launcher == 'none' or torch.cuda.is_available() or (dist.is_available() and dist.is_initialized()):
        return None
    if launcher != 'pytorch':
        raise ValueError(f"--launcher {launcher} needs CUDA GPUs (mmengine sets a GPU per process); on CPU "
                         "processes use --launcher pytorch (tools/dist_train.sh)")
    missing = [name for name in ENV_VARS if name not in os.environ]
    if missing:
        raise RuntimeError(f'--launcher pytorch: environment variables {missing} are not set; start the processes '
                           'with torch.distributed.run (tools/dist_train.sh CONFIG NUM_PROCESSES)')
    env_cfg = cfg.setdefault('env_cfg', {})
    dist_cfg = dict(env_cfg.get('dist_cfg') or {})
    backend = cpu_backend(dist_cfg)
    kwargs = {k: v for k, v in dist_cfg.items() if k != 'backend'}
    if kwargs.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
    dist.init_process_group(backend=backend, **kwargs)
    env_cfg['dist_cfg'] = dict(dist_cfg, backend=backend)
    cfg.model_wrapper_cfg = cpu_model_wrapper_cfg(cfg)
    return backend
