"""Re-estimate the BN running statistics of a trained checkpoint (mmaqd.engine.bn_reestimation) and evaluate it.

    python tools/analysis/reestimate_bn.py configs/aqd/fcos_r18-c32_fpn_aqd-w2a2_synth.py \
        work_dirs/pipeline/aqd-w2a2/final.pth --num-batches 50 --out work_dirs/levers/w2a2-bn.pth

Writes the checkpoint with the new statistics to ``--out`` (never over an existing file) and prints the COCO AP
of the test split before and after.
"""
import argparse
import os.path as osp
import sys
import tempfile

import torch
from mmengine.config import Config, DictAction

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))  # tools/: mmaqd_tools


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('config')
    parser.add_argument('checkpoint')
    parser.add_argument('--out', required=True, help='the checkpoint to write (must not exist)')
    parser.add_argument('--num-batches', type=int, default=50)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = parser.parse_args(argv)
    if osp.exists(args.out):
        parser.error(f'--out {args.out} exists; choose another path (nothing is overwritten)')
    if args.num_batches < 1:
        parser.error(f'--num-batches must be >= 1, got {args.num_batches}')
    from mmengine.runner import Runner

    from mmaqd.engine.bn_reestimation import reestimate_bn
    from mmaqd_tools.experiment import coco_ap
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    aps = {}
    with tempfile.TemporaryDirectory() as tmp:
        cfg.work_dir, cfg.load_from, cfg.resume = tmp, args.checkpoint, False
        cfg.custom_hooks = []
        runner = Runner.from_cfg(cfg)
        aps['before'] = coco_ap(runner.test())  # loads the checkpoint
        train_cfg = cfg.train_dataloader.copy()
        train_cfg.update(num_workers=0, persistent_workers=False)
        ran = reestimate_bn(runner.model, Runner.build_dataloader(train_cfg), args.num_batches)
        aps['after'] = coco_ap(runner.test())
    ckpt = torch.load(args.checkpoint, map_location='cpu', weights_only=True)
    ckpt['state_dict'] = {k: v.cpu() for k, v in runner.model.state_dict().items()}
    ckpt.setdefault('meta', {})['bn_reestimated'] = dict(num_batches=ran, source=osp.abspath(args.checkpoint))
    torch.save(ckpt, args.out)
    print(f'BN statistics re-estimated over {ran} training batches -> {args.out}')
    print(f"COCO AP before {aps['before']['AP']}, after {aps['after']['AP']}")
    return 0


if __name__ == '__main__':
    sys.exit(main())
