"""load_backbone on folders written by DiTPipeline.save_pretrained (and the packaged tiny-mnist): same code, same outputs."""
import json, shutil
from pathlib import Path
import pytest, torch
from diffusers import AutoencoderKL, DDPMScheduler, DDIMScheduler, DiTPipeline, DiTTransformer2DModel
from mgd3.backbone import load_backbone, list_backbones, BACKBONES

def _tiny_pipeline(num_classes=4, learned_sigma=True, scheduler=None):
    torch.manual_seed(0)
    tr = DiTTransformer2DModel(num_attention_heads=2, attention_head_dim=8, in_channels=4,
                               out_channels=8 if learned_sigma else 4, num_layers=2, sample_size=4, patch_size=2,
                               num_embeds_ada_norm=num_classes)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=('DownEncoderBlock2D',)*2,
                        up_block_types=('UpDecoderBlock2D',)*2, block_out_channels=(8, 16), layers_per_block=1,
                        norm_num_groups=4, latent_channels=4, scaling_factor=0.3)
    return DiTPipeline(transformer=tr, vae=vae, scheduler=scheduler or DDPMScheduler())

def test_saved_pipeline_loads_with_identical_outputs(tmp_path):
    pipe = _tiny_pipeline(); pipe.save_pretrained(tmp_path)
    bb = load_backbone(tmp_path, device='cpu')
    assert bb.name == str(tmp_path) and bb.num_classes == 4 and bb.null_class == 4
    assert bb.class_names == ('0', '1', '2', '3') and bb.latent_shape == (4, 4, 4)
    assert (bb.image_size, bb.image_channels, bb.scaling_factor) == (8, 3, pytest.approx(0.3))
    x = torch.randn(3, 4, 4, 4); t = torch.tensor([0, 500, 999]); y = torch.tensor([1, 3, 4])
    pipe.transformer.eval(); pipe.vae.eval()
    with torch.no_grad():
        ref = pipe.transformer(x, timestep=t, class_labels=y).sample
        out = bb.transformer(x, timestep=t, class_labels=y).sample
        img = torch.rand(2, 3, 8, 8) * 2 - 1
        z_ref = pipe.vae.encode(img).latent_dist.mean * 0.3
        assert torch.equal(bb.encode(img), z_ref)
        assert torch.equal(bb.decode(z_ref), ((pipe.vae.decode(z_ref / 0.3).sample + 1) / 2).clamp(0, 1))
    assert torch.equal(out, ref)

def test_scheduler_is_dit_ddpm_whatever_was_saved(tmp_path):
    _tiny_pipeline(learned_sigma=False, scheduler=DDIMScheduler(clip_sample=True)).save_pretrained(tmp_path)
    bb = load_backbone(tmp_path, device='cpu')
    s = bb.scheduler.config
    assert isinstance(bb.scheduler, DDPMScheduler) and not s.clip_sample and s.prediction_type == 'epsilon'
    assert (s.beta_schedule, s.beta_start, s.beta_end, s.num_train_timesteps) == ('linear', 1e-4, 0.02, 1000)
    assert not bb.learned_sigma and s.variance_type == 'fixed_small'

def test_label_dropout_is_off_even_in_train_mode(tmp_path):
    _tiny_pipeline().save_pretrained(tmp_path)
    bb = load_backbone(tmp_path, device='cpu')
    bb.transformer.train()   # a user switching to train mode must still get deterministic labels
    x = torch.randn(64, 4, 4, 4); t = torch.full((64,), 300); y = torch.zeros(64, dtype=torch.long)
    with torch.no_grad():
        a = bb.transformer(x, timestep=t, class_labels=y).sample
        b = bb.transformer(x, timestep=t, class_labels=y).sample
    assert torch.equal(a, b)

def test_missing_parts_and_offline_hub_explain_the_fix(tmp_path, monkeypatch):
    _tiny_pipeline().save_pretrained(tmp_path/'p')
    shutil.rmtree(tmp_path/'p'/'transformer')
    with pytest.raises(FileNotFoundError, match='no transformer/ folder'): load_backbone(tmp_path/'p')
    with pytest.raises(FileNotFoundError, match='save_pretrained'): load_backbone(tmp_path/'missing')
    # a hub id that is not cached: the cache lookup misses, the download is refused by offline mode (no network
    # lookup at all, whatever the environment says), and the error explains how to pass local folders
    import huggingface_hub.constants as hub_constants
    monkeypatch.setattr(hub_constants, 'HF_HUB_OFFLINE', True)
    monkeypatch.setattr(hub_constants, 'HF_HUB_CACHE', str(tmp_path/'empty-hub-cache'))
    with pytest.raises(FileNotFoundError, match='vae=') as err: load_backbone('no-such-org/no-such-dit-model')
    assert 'neither a local folder nor a hub model in the local cache' in str(err.value)

def test_registry_knows_the_paper_backbone():
    assert {'tiny-mnist', 'dit-xl-2-256'} <= set(list_backbones())
    assert BACKBONES['dit-xl-2-256']() == {'source': 'facebook/DiT-XL-2-256', 'vae': 'stabilityai/sd-vae-ft-mse'}
