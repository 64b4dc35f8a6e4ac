"""Evaluate a checkpoint with the config's test dataloader and evaluator (mmdet's command line).

    python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out results.pkl] [--show-dir DIR]
                                           [--cfg-options k=v ...] [--launcher pytorch]

``--launcher pytorch`` (tools/dist_test.sh) also runs on CPU processes, with gloo (:mod:`mmaqd.engine.distributed`).
"""
import argparse
import os.path as osp

from mmaqd_tools.runner import add_run_args, build_runner, load_run_config, parse_run_args


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Test (and evaluate) a detector')
    parser.add_argument('config', help='test config file path')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--work-dir', help='where the metrics file goes (default: ./work_dirs/<config name>)')
    parser.add_argument('--out', help='also dump the predictions to this .pkl file')
    parser.add_argument('--show-dir', help='draw predictions into this folder (under the run\'s work dir)')
    add_run_args(parser)
    return parse_run_args(parser)


def main() -> None:
    args = parse_args()
    if not osp.isfile(args.checkpoint):
        raise FileNotFoundError(f'checkpoint {args.checkpoint} does not exist')
    if args.out is not None and not args.out.endswith(('.pkl', '.pickle')):
        raise ValueError(f'--out {args.out}: the dump file must end in .pkl or .pickle')
    cfg = load_run_config(args)
    cfg.load_from = args.checkpoint
    if args.show_dir:
        cfg.default_hooks.visualization.update(draw=True, show=False, test_out_dir=args.show_dir)

    runner = build_runner(cfg)
    if args.out is not None:
        from mmdet.evaluation import DumpDetResults
        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    runner.test()


if __name__ == '__main__':
    main()
