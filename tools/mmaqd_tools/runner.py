"""What ``tools/train.py`` and ``tools/test.py`` share: mmdet's options of a run, its config, its Runner."""
import argparse
import os
import os.path as osp

from mmengine.config import Config, DictAction


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """``--cfg-options``, ``--launcher`` and ``--local-rank``, as mmdet's tools take them."""
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config keys, e.g. train_cfg.max_iters=100 model.backbone.depth=34')
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none',
                        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def parse_run_args(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """``parser``'s arguments; sets ``LOCAL_RANK`` from ``--local-rank`` unless the launcher did."""
    args = parser.parse_args()
    os.environ.setdefault('LOCAL_RANK', str(args.local_rank))
    return args


def load_run_config(args: argparse.Namespace) -> Config:
    """``args.config`` with ``--cfg-options`` merged and ``launcher`` set; the work dir is ``--work-dir``, else the
    config's, else ``./work_dirs/<config name>``."""
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    return cfg


def build_runner(cfg: Config):
    """The config's Runner (``runner_type`` when set), after mmaqd's registration (which also lets mmengine's
    resume checkpoints load under torch >= 2.6, for any config) and, on a machine without CUDA, the CPU process
    group of ``cfg.launcher`` (:func:`mmaqd.engine.distributed.init_cpu_distributed`)."""
    from mmengine.registry import RUNNERS
    from mmengine.runner import Runner

    from mmaqd.engine.distributed import init_cpu_distributed
    from mmaqd.registration import register_all_modules
    register_all_modules()
    init_cpu_distributed(cfg, cfg.launcher)
    return Runner.from_cfg(cfg) if 'runner_type' not in cfg else RUNNERS.build(cfg)
