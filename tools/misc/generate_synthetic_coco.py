"""Write the generated COCO-format detection benchmark.

    python tools/misc/generate_synthetic_coco.py                        # benchmark split -> data/synthetic_coco
    python tools/misc/generate_synthetic_coco.py --preset tiny --out data/synthetic_coco_tiny
    python tools/misc/generate_synthetic_coco.py --num-train 500 --image-size 320 --seed 3 --out data/my_synth

Nothing is written when the folder already holds the same dataset; a folder holding other data is refused
unless --force.
"""
import argparse
import dataclasses
import time

from mmaqd.datasets.synthetic_coco import PRESETS, generate_synthetic_coco


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--preset', choices=sorted(PRESETS), default='benchmark')
    parser.add_argument('--out', default=None, help='output folder (default: data/synthetic_coco, '
                        'or data/synthetic_coco_tiny for --preset tiny)')
    for field in dataclasses.fields(PRESETS['benchmark']):
        if field.name in ('objects_per_image', 'num_distractors'):
            parser.add_argument('--' + field.name.replace('_', '-'), type=int, nargs=2, metavar=('MIN', 'MAX'))
        else:
            parser.add_argument('--' + field.name.replace('_', '-'), type=float if field.name in (
                'max_iou', 'noise_std') else int)
    parser.add_argument('--force', action='store_true', help='overwrite a folder that holds other data')
    args = parser.parse_args()

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(PRESETS['benchmark'])
                 if getattr(args, f.name) is not None}
    overrides = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    spec = dataclasses.replace(PRESETS[args.preset], **overrides)
    out = args.out or ('data/synthetic_coco' if args.preset == 'benchmark' else f'data/synthetic_coco_{args.preset}')
    start = time.time()
    if generate_synthetic_coco(out, spec, force=args.force):
        print(f'wrote {spec.num_train} train + {spec.num_val} val images to {out} in {time.time() - start:.1f} s')
    else:
        print(f'{out} already holds this dataset; nothing written')


if __name__ == '__main__':
    main()
