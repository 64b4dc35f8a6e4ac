"""Train-then-test experiments through mmengine's Runner: the part of the repo's jobs that is not a table of configs.

Used by ``tools/pipeline.py`` (the main job) and ``tools/benchmark/accuracy.py``, with the stages of
:mod:`mmaqd_tools.stages`. A *stage* is one config trained in its own work dir and evaluated on the val split with
pycocotools (mmdet's ``CocoMetric``):

* :func:`build_stage_cfg` loads the config and applies, in order, the data root, ``--cfg-options`` and the work
  dir; optionally it stretches the iteration schedule to a changed ``max_iters``.
* :func:`run_stage` trains and tests. A finished stage (its ``final.pth`` exists) is only evaluated again; an
  interrupted one resumes from its own latest checkpoint; a fresh one starts from ``load_from`` (the weights of
  the stage it fine-tunes from). It writes ``stage.json`` beside ``final.pth`` with what the weights were trained
  with (config, overrides, seed), and warns when a finished stage is reused with a different config, different
  overrides or another seed.
* :func:`coco_ap` turns ``CocoMetric`` output into AP, AP50, AP75, APs, APm, APl in percent;
  :func:`markdown_table` formats rows of them.
"""
import json
import os
import os.path as osp
import platform
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, Optional, Sequence

from mmengine.config import Config

#: (column label, CocoMetric key without the ``coco/`` prefix)
METRICS = (('AP', 'bbox_mAP'), ('AP50', 'bbox_mAP_50'), ('AP75', 'bbox_mAP_75'), ('APs', 'bbox_mAP_s'),
           ('APm', 'bbox_mAP_m'), ('APl', 'bbox_mAP_l'))
FINAL = 'final.pth'
RECORD = 'stage.json'


def _print(msg: str) -> None:
    print(msg, flush=True)


# --------------------------------------------------------------------------------------------- config
def rescale_schedule(cfg: Config, old_iters: int, new_iters: int) -> None:
    """Stretch an iteration schedule written for ``old_iters`` to ``new_iters``, in place.

    Scheduler ``end`` values equal to ``old_iters`` become ``new_iters`` and ``milestones`` scale by
    ``new_iters / old_iters`` (the lr steps stay at the same fraction of training); warm-ups (``end`` below
    ``old_iters``) keep their length. ``train_cfg.val_interval`` equal to ``old_iters`` follows too.
    """
    ratio = new_iters / old_iters
    schedulers = cfg.get('param_scheduler') or []
    for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
        if sched.get('by_epoch', True):  # mmengine's default: an epoch schedule, not in iterations
            continue
        if sched.get('end') == old_iters:
            sched['end'] = new_iters
        if 'milestones' in sched:
            sched['milestones'] = [max(1, round(m * ratio)) for m in sched['milestones']]
    if cfg.train_cfg.get('val_interval') == old_iters:
        cfg.train_cfg.val_interval = new_iters


def set_data_root(cfg: Config, data_root: str) -> None:
    """Point the train/val/test dataloaders and the COCO evaluators of a COCO-format config at ``data_root``."""
    root = data_root.rstrip('/') + '/'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        if cfg.get(loader) is not None:
            cfg[loader].dataset.data_root = root
    for evaluator in ('val_evaluator', 'test_evaluator'):
        if cfg.get(evaluator) is not None and 'ann_file' in cfg[evaluator]:
            cfg[evaluator].ann_file = root + 'annotations/' + osp.basename(cfg[evaluator].ann_file)


def build_stage_cfg(config: str, work_dir: str, name: str, cfg_options: Optional[dict] = None,
                    data_root: Optional[str] = None, rescale: bool = False, iters_scale: float = 1.0,
                    log: Callable[[str], None] = _print) -> Config:
    """The config of stage ``name``: ``config`` read from ``data_root`` (if given) + ``cfg_options`` (which win),
    trained in ``work_dir``.

    ``iters_scale`` multiplies ``train_cfg.max_iters`` (after ``cfg_options``). When ``max_iters`` changes that
    way, or through ``cfg_options`` with ``rescale``, the lr schedule is stretched to the new length
    (:func:`rescale_schedule`). ``load_from`` / ``resume`` are decided by :func:`run_stage`.
    """
    cfg = Config.fromfile(config)
    if data_root:
        set_data_root(cfg, data_root)
    old_iters = cfg.get('train_cfg', {}).get('max_iters')
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    new_iters = cfg.get('train_cfg', {}).get('max_iters')
    if new_iters and iters_scale != 1.0:
        if iters_scale <= 0:
            raise ValueError(f'iters_scale must be > 0, got {iters_scale}')
        new_iters = cfg.train_cfg.max_iters = max(1, round(new_iters * iters_scale))
    if (rescale or iters_scale != 1.0) and old_iters and new_iters and new_iters != old_iters:
        rescale_schedule(cfg, old_iters, new_iters)
        log(f'stage {name}: max_iters {old_iters} -> {new_iters}, lr schedule rescaled to match')
    cfg.work_dir = work_dir
    cfg.experiment_name = name
    return cfg


# --------------------------------------------------------------------------------------------- metrics
def coco_ap(metrics: Optional[dict]) -> Dict[str, Optional[float]]:
    """``CocoMetric`` output (``coco/bbox_mAP``, ... in [0, 1]) as ``{'AP': 31.2, ...}`` in percent.

    An empty dict (mmdet's ``CocoMetric`` returns nothing when no box scored above ``test_cfg.score_thr``)
    gives 0 for every metric; pycocotools' -1 (no ground truth of that size) gives ``None``.
    """
    if not metrics:
        return {label: 0.0 for label, _ in METRICS}
    out = {}
    for label, key in METRICS:
        value = float(metrics[f'coco/{key}'])
        out[label] = None if value < 0 else round(100 * value, 2)
    return out


def fmt(value, digits: int = 1) -> str:
    """A table cell: floats with ``digits`` decimals, ``None`` as ``-``."""
    if value is None:
        return '-'
    if isinstance(value, float):
        return f'{value:.{digits}f}'
    return str(value)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub markdown table; cells go through :func:`fmt`."""
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(f'row {row!r} has {len(row)} cells, the header {len(header)}')
        lines.append('| ' + ' | '.join(fmt(c) for c in row) + ' |')
    return '\n'.join(lines)


# --------------------------------------------------------------------------------------------- stages
@dataclass
class StageResult:
    """What :func:`run_stage` measured.

    Attributes:
        name, config: the stage and its config file.
        metrics: :func:`coco_ap` of the val split (percent).
        seconds: wall time of this call (training + evaluation, or evaluation only when ``trained`` is false).
        trained: whether this call trained (or resumed training); false when a finished stage was reused.
        train_seconds: wall time of the training that produced the weights, from ``stage.json`` when it was
            reused (``None`` if unknown).
        checkpoint: the stage's ``final.pth``.
        seed: the random seed the weights were trained with (mmengine's ``randomness.seed``); ``None`` when
            unknown (a stage trained unseeded, or before seeds were recorded).
    """

    name: str
    config: str
    metrics: Dict[str, Optional[float]]
    seconds: float
    trained: bool
    train_seconds: Optional[float] = None
    checkpoint: str = ''
    seed: Optional[int] = None

    def to_dict(self) -> dict:
        return asdict(self)


def _read_record(work_dir: str) -> Optional[dict]:
    path = osp.join(work_dir, RECORD)
    if not osp.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def latest_checkpoint(work_dir: str) -> Optional[str]:
    """The checkpoint mmengine's CheckpointHook saved last in ``work_dir`` (its ``last_checkpoint`` file), if any."""
    path = osp.join(work_dir, 'last_checkpoint')
    if not osp.isfile(path):
        return None
    with open(path) as f:
        ckpt = f.read().strip()
    return ckpt if ckpt and osp.isfile(ckpt) else None


def _check_reuse(record: Optional[dict], config: str, cfg_options: Optional[dict], seed: Optional[int],
                 log) -> None:
    if record is None:
        return
    diffs = []
    if seed is not None and record.get('seed') != seed:
        diffs.append(f"seed {record.get('seed')} -> {seed}")
    if record.get('config') != config:
        diffs.append(f"config {record.get('config')} -> {config}")
    if (record.get('cfg_options') or {}) != _jsonable(cfg_options or {}):
        diffs.append(f"cfg_options {record.get('cfg_options')} -> {cfg_options}")
    if diffs:
        log(f'WARNING: reusing weights trained with a different setup ({"; ".join(diffs)}); '
            'use --retrain or another --work-dir to train them again')


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def run_stage(name: str, config: str, work_dir: str, load_from: Optional[str] = None,
              cfg_options: Optional[dict] = None, retrain: bool = False, data_root: Optional[str] = None,
              rescale: bool = False, iters_scale: float = 1.0, runner_factory: Optional[Callable] = None,
              log: Callable[[str], None] = _print, seed: Optional[int] = None) -> StageResult:
    """Train ``config`` as stage ``name`` in ``work_dir`` and evaluate it; returns a :class:`StageResult`.

    * ``<work_dir>/final.pth`` exists and not ``retrain``: only evaluate it.
    * a checkpoint of an interrupted run exists (mmengine's ``last_checkpoint``) and not ``retrain``: resume
      from it (iteration, optimizer and scheduler state), then evaluate.
    * otherwise: train from ``load_from`` (``None``: the config's own initialisation), then evaluate.

    After training the weights are saved as ``final.pth`` (no optimizer state) with ``stage.json``. Only an
    explicit checkpoint is ever resumed: ``load_from`` is loaded as initial weights, never resumed from.
    ``cfg_options``, ``data_root``, ``rescale`` and ``iters_scale`` go to :func:`build_stage_cfg`;
    ``runner_factory`` (default ``Runner.from_cfg``) builds the runner from the config. A config with
    ``model.distill_cfg`` takes its teacher's weights from ``load_from`` too (the FP stage it starts from).
    ``seed`` (an int) seeds the training (``randomness.seed``, recorded in ``stage.json``); ``None`` keeps the
    config's randomness. A finished stage is reused whatever its seed (with a warning when it differs); the result
    reports the seed its weights were trained with.
    """
    if runner_factory is None:
        from mmengine.runner import Runner
        runner_factory = Runner.from_cfg
    cfg = build_stage_cfg(config, work_dir, name, cfg_options, data_root, rescale, iters_scale, log)
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f'seed must be a non-negative int or None, got {seed!r}')
        cfg.randomness = dict(cfg.get('randomness') or {}, seed=seed)
    final = osp.join(work_dir, FINAL)
    start = time.time()
    if osp.isfile(final) and not retrain:
        record = _read_record(work_dir)
        _check_reuse(record, config, cfg_options, seed, log)
        log(f'stage {name}: {final} exists, evaluating it (--retrain trains again)')
        cfg.load_from, cfg.resume = final, False
        metrics = coco_ap(runner_factory(cfg).test())
        return StageResult(name, config, metrics, round(time.time() - start, 1), False,
                           (record or {}).get('train_seconds'), final, (record or {}).get('seed'))

    latest = None if retrain else latest_checkpoint(work_dir)
    if latest:
        log(f'stage {name}: resuming {config} from {latest}')
        cfg.load_from, cfg.resume = latest, True
    else:
        log(f'stage {name}: training {config} in {work_dir}' + (f' from {load_from}' if load_from else ''))
        cfg.load_from, cfg.resume = load_from, False
    if load_from and (cfg.get('model') or {}).get('distill_cfg'):
        # the teacher of a distilled stage is the FP detector it starts from, in this work dir
        cfg.model.distill_cfg.teacher_checkpoint = load_from
    runner = runner_factory(cfg)
    runner.train()
    train_seconds = round(time.time() - start, 1)
    metrics = coco_ap(runner.test())
    os.makedirs(work_dir, exist_ok=True)
    runner.save_checkpoint(work_dir, FINAL, save_optimizer=False, save_param_scheduler=False)
    with open(osp.join(work_dir, RECORD), 'w') as f:
        json.dump(dict(stage=name, config=config, cfg_options=_jsonable(cfg_options or {}), load_from=load_from,
                       resumed_from=latest, train_seconds=train_seconds, seed=seed), f, indent=2)
    return StageResult(name, config, metrics, round(time.time() - start, 1), True, train_seconds, final, seed)


# --------------------------------------------------------------------------------------------- environment
def ensure_dataset(data_root: str, log: Callable[[str], None] = _print, preset: str = 'benchmark') -> None:
    """Write the generated dataset ``PRESETS[preset]`` (seeded) to ``data_root`` unless it is there already.

    A folder holding another dataset is an error (:func:`~mmaqd.datasets.synthetic_coco.generate_synthetic_coco`).
    """
    from mmaqd.datasets.synthetic_coco import PRESETS, generate_synthetic_coco
    start = time.time()
    if generate_synthetic_coco(data_root, PRESETS[preset]):
        log(f'generated the {preset} dataset in {data_root} ({time.time() - start:.0f} s)')
    else:
        log(f'dataset found in {data_root}')


def machine_info() -> Dict[str, object]:
    """Where a measurement ran: platform, CPU count, torch threads and version, device."""
    import torch
    device = 'cpu'
    if torch.cuda.is_available():
        device = f'cuda ({torch.cuda.get_device_name(0)})'
    return dict(platform=platform.platform(), python=platform.python_version(), cpu_count=os.cpu_count(),
                torch=torch.__version__, torch_threads=torch.get_num_threads(), device=device)
