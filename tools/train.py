"""Train a detector from an mmaqd (or any mmdet) config, with mmdet's command line.

    python tools/train.py CONFIG [--work-dir DIR] [--resume [CKPT]] [--overwrite] [--amp] [--auto-scale-lr]
                                 [--cfg-options k=v ...] [--launcher pytorch]

mmaqd configs import the plugin through ``custom_imports``, so mmdet's own ``tools/train.py`` (shipped in the
package under ``mmdet/.mim/tools/``) trains them too; this copy exists for the multi-GPU scripts beside it.

Unlike mmdet's, it refuses a work dir that holds checkpoints, ``last_checkpoint`` or a different config of the same
name, which the run would overwrite or delete (:mod:`mmaqd_tools.work_dir_guard`), unless ``--resume`` continues
that run or ``--overwrite`` says so. Timestamped log folders of earlier runs are no obstacle.

``--launcher pytorch`` (tools/dist_train.sh) also runs on CPU processes: without CUDA the process group starts
with gloo and DDP wraps the CPU model (:mod:`mmaqd.engine.distributed`); with GPUs mmengine starts NCCL as usual.
"""
import argparse
import os.path as osp

from mmengine.config import Config

from mmaqd_tools.runner import add_run_args, build_runner, load_run_config, parse_run_args
from mmaqd_tools.work_dir_guard import check_work_dir


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a detector')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='where logs and checkpoints go '
                        '(default: ./work_dirs/<config name>)')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by (total batch size / auto_scale_lr.base_batch_size)')
    parser.add_argument('--resume', nargs='?', type=str, const='auto',
                        help='resume from this checkpoint, or, with no value, from the latest one in work-dir')
    parser.add_argument('--overwrite', action='store_true',
                        help='train into a work dir that holds checkpoints or another config of the same name '
                        '(they may be overwritten or deleted); refused without this flag or --resume')
    add_run_args(parser)
    return parse_run_args(parser)


def guard_work_dir(cfg: Config, overwrite: bool) -> None:
    """Exit naming the files of ``cfg.work_dir`` that the run would overwrite or delete, unless ``overwrite`` or
    ``cfg.resume`` (:func:`mmaqd_tools.work_dir_guard.check_work_dir`)."""
    if overwrite or cfg.get('resume'):
        return
    checkpoint_hook = (cfg.get('default_hooks') or {}).get('checkpoint') or {}
    try:
        check_work_dir(cfg.work_dir, osp.basename(cfg.filename) if cfg.filename else None, cfg.pretty_text,
                       checkpoint_hook.get('out_dir'))
    except FileExistsError as e:
        raise SystemExit(f'train.py: {e}') from None


def main() -> None:
    args = parse_args()
    cfg = load_run_config(args)

    if args.amp:
        cfg.optim_wrapper.type = 'AmpOptimWrapper'
        cfg.optim_wrapper.loss_scale = 'dynamic'
    if args.auto_scale_lr:
        if 'base_batch_size' not in cfg.get('auto_scale_lr', {}):
            raise RuntimeError(f'--auto-scale-lr needs auto_scale_lr.base_batch_size in {args.config}')
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise FileNotFoundError(f'--resume {args.resume}: no such checkpoint file')
        cfg.resume, cfg.load_from = True, args.resume

    guard_work_dir(cfg, args.overwrite)
    build_runner(cfg).train()


if __name__ == '__main__':
    main()
