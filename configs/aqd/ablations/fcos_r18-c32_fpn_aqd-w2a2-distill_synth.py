# Beyond the AQD paper, on the generated benchmark: AQD FCOS at 2 bits (fcos_r18-c32_fpn_aqd-w2a2_synth.py) fine-tuned
# with distillation from the frozen FP detector it starts from (stage `fp` of tools/pipeline.py): FPN feature imitation
# (FitNets, arXiv 1412.6550) and soft targets on the head outputs (Hinton et al., arXiv 1503.02531); see
# mmaqd/models/detectors/distill.py. The AQD paper's related baseline is Auxi (arXiv 2007.06919v1, Table 2), a trained
# FP auxiliary module. The teacher is built at the first training iteration: testing and deployment need neither file.
_base_ = '../fcos_r18-c32_fpn_aqd-w2a2_synth.py'

model = dict(
    distill_cfg=dict(teacher_config='configs/fcos/fcos_r18-c32_fpn_bn-head_synth.py',
                     teacher_checkpoint='work_dirs/pipeline/fp/final.pth', feature_weight=1.0, head_weight=1.0,
                     temperature=1.0))
