"""Registries carry their facts: a dataset's spec names its backbone, teacher, evaluation preset and validation twin;
a backbone kind names its CFG scale, stop rule, save size and latents. A new embedded dataset or a new backbone kind
is one registration, and the four off-default traps (issue 22) resolve to the authors' settings."""
import json, logging
from dataclasses import replace
from pathlib import Path
import pytest, torch
import mgd3
from mgd3.backbone import (BACKBONE_KINDS, BackboneKind, DIT_VAE, backbone_entry, register_backbone_kind,
                           _declared_features, load_backbone)
from mgd3.data import DATASETS, dataset_spec, folder_spec, register_dataset
from mgd3.testing import imagenet_tree

def _dit_xl2_folder(folder:Path) -> Path:
    "A folder whose transformer config is DiT-XL/2's (built on the meta device: no 675M-parameter model is made)."
    from diffusers import DiTTransformer2DModel
    with torch.device('meta'):
        tr = DiTTransformer2DModel(sample_size=32, num_layers=28, num_attention_heads=16, attention_head_dim=72,
                                   in_channels=4, out_channels=8, patch_size=2, num_embeds_ada_norm=1000)
    tr.save_config(folder/'transformer')
    (folder/'model_index.json').write_text(json.dumps({'_class_name': 'DiTPipeline'}))
    return folder

# ---------------------------------------------------------------- the four traps
def test_an_undeclared_dit_xl2_folder_gets_the_original_dits_timestep_features(tmp_path, caplog):
    folder = _dit_xl2_folder(tmp_path)
    with caplog.at_level(logging.INFO, logger='mgd3.backbone'):
        assert _declared_features(folder, None, folder) == 'dit'
    assert "DiT-XL/2's" in caplog.text and "'dit'" in caplog.text
    cfg = json.loads((folder/'transformer'/'config.json').read_text())
    cfg['num_layers'] = 2                                           # any other shape: diffusers' own features
    (folder/'transformer'/'config.json').write_text(json.dumps(cfg))
    assert _declared_features(folder, None, folder) == 'diffusers'

def test_an_original_dit_without_vae_gets_sd_vae_ft_mse(tmp_path, tiny_mnist_pipeline):
    assert DIT_VAE == 'stabilityai/sd-vae-ft-mse' == backbone_entry('dit-xl-2-256').vae
    for name in ('facebook/DiT-XL-2-256', 'facebook/DiT-XL-2-512', str(_dit_xl2_folder(tmp_path))):
        e = backbone_entry(name)
        assert (e.kind.name, e.vae) == ('dit', DIT_VAE), name   # what load_backbone(name) decodes with
    assert backbone_entry('facebook/DiT-XL-2-256').timestep_features == 'dit'
    assert backbone_entry(str(tiny_mnist_pipeline)).vae is None    # another DiT keeps its pipeline's VAE

def test_sd_backbones_default_to_cfg_8():
    sd = mgd3.DistillConfig(backbone='sd:/models/sd15').resolved()
    assert (sd.guidance_scale, sd.stop_rule, sd.save_size) == (8.0, 'timestep', 256)
    assert mgd3.DistillConfig().resolved().guidance_scale == 4.0
    assert mgd3.DistillConfig(backbone='sd:/m', guidance_scale=6.0).resolved().guidance_scale == 6.0

def test_sd_posterior_noise_is_seeded_per_generation_seed(tmp_path):
    from mgd3.distill import prepare
    from mgd3.run import Run
    from mgd3.text2img import tiny_text_backbone_folder
    cfg = mgd3.DistillConfig.from_params(
        dataset='imagenette', data_root=str(imagenet_tree(tmp_path/'tree', train_per_class=2, val_per_class=1)),
        backbone=f'sd:{tiny_text_backbone_folder(tmp_path)}', ipc=1, seeds=[0, 1], mode_flips='none',
        out_dir=str(tmp_path/'run'), device='cpu', methods=['unguided'])
    ctx = prepare(Run.open(cfg), torch.device('cpu'))
    assert [ctx.cache_for(s).key['seed'] for s in (0, 1)] == [0, 1]   # seed 0: the cache it always had
    a, b = ctx.modes_for(0).centroids, ctx.modes_for(1).centroids
    assert a.shape == b.shape and not torch.allclose(a, b)             # each seed clusters its own posterior samples

# ---------------------------------------------------------------- the teacher's columns
def test_export_refuses_an_imagenet_teacher_on_a_custom_folder(tmp_path):
    from mgd3.evalnets import create_evalnet, save_teacher
    from mgd3.export import teacher_soft_labels
    from mgd3.run import Run
    root = imagenet_tree(tmp_path/'tree', train_per_class=1, val_per_class=1)
    teacher = save_teacher(tmp_path/'teacher', create_evalnet('convnet3', 1000, 32), dict(
        net='convnet3', num_classes=1000, image_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.5,) * 3))
    register_dataset('custom-folder')(lambda: folder_spec(root/'train', name='custom-folder'))
    try:
        cfg = mgd3.DistillConfig(dataset='custom-folder', data_root=str(root), teacher=str(teacher),
                                 out_dir=str(tmp_path/'run')).resolved()
        with pytest.raises(ValueError, match='not an ImageNet subset'):
            teacher_soft_labels(Run(cfg, None), torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
        with pytest.raises(ValueError, match='not an ImageNet subset'):   # evaluation refuses it the same way
            mgd3.teacher_classes(dataset_spec('custom-folder'), mgd3.load_teacher(teacher, device='cpu'))
    finally:
        DATASETS.pop('custom-folder')
    nette = dataset_spec('imagenette')   # an ImageNet subset: label order for export, sorted wnids for evaluation
    assert mgd3.teacher_columns(nette, 1000) == list(nette.class_ids)
    assert mgd3.teacher_columns(nette, 1000, sorted_wnids=True) == sorted(nette.class_ids)

# ---------------------------------------------------------------- one registration each
def test_a_second_embedded_dataset_is_one_registration(tmp_path):
    "A toy embedded dataset (MNIST-5k's 40-per-class val split as train) runs through distill with its own facts."
    register_dataset('mnist5k-small')(lambda: replace(
        dataset_spec('mnist5k'), name='mnist5k-small', source='toy: the 40-per-class val split of mnist5k as train',
        teacher=None, validation=None, embedded_splits=(('train', 'val'), ('test', 'test'))))
    try:
        cfg = mgd3.DistillConfig.from_params(dataset='mnist5k-small')
        assert (cfg.backbone, cfg.teacher, cfg.eval_preset()) == ('tiny-mnist', None, 'mnist5k')   # from the spec
        assert mgd3.load_embedded('mnist5k-small', 'train')[0].shape == (400, 1, 32, 32)
        out = tmp_path/'run'
        r = mgd3.distill(dataset='mnist5k-small', out_dir=str(out), ipc=1, seeds=[0], epochs=1, quick=True,
                         methods=['random_real'], device='cpu')
        assert len(list((out/'images'/'random_real').rglob('*.png'))) == 10
        assert r.config.teacher is None and r.config.backbone == 'tiny-mnist'
        with pytest.raises(ValueError, match='no validation split is defined'):
            mgd3.validation_data('mnist5k-small')
    finally:
        DATASETS.pop('mnist5k-small')

def test_a_new_backbone_kind_is_one_registration(tmp_path, tiny_mnist_pipeline):
    "A toy kind (a DiT loader with its own CFG default) is selected by its prefix and runs through distill."
    loads = []
    def load(entry, **kw):
        loads.append(entry.name)
        return load_backbone(entry.source, **kw)
    register_backbone_kind(BackboneKind('toy', load, prefix='toy', guidance_scale=2.0, timestep_features=True))
    try:
        name = f'toy:{tiny_mnist_pipeline}'
        assert mgd3.DistillConfig(backbone=name).resolved().guidance_scale == 2.0
        out = tmp_path/'run'
        r = mgd3.distill(backbone=name, out_dir=str(out), ipc=1, seeds=[0], num_inference_steps=2, stop_t=0,
                         epochs=1, quick=True, methods=['unguided'], device='cpu')
        assert loads == [name] and r.config.guidance_scale == 2.0
        assert len(list((out/'images'/'unguided').rglob('*.png'))) == 10
    finally:
        BACKBONE_KINDS.pop('toy')
