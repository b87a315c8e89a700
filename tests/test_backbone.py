"""load_backbone on folders written by DiTPipeline.save_pretrained (and the packaged tiny-mnist): same code, same outputs."""
import json, math, shutil
import numpy as np, pytest, torch
from diffusers import AutoencoderKL, DDPMScheduler, DDIMScheduler, DiTPipeline, DiTTransformer2DModel
from mgd3.backbone import (load_backbone, list_backbones, BACKBONES, declare_timestep_features, get_timestep_features,
                           _declared_features)

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
    assert BACKBONES['dit-xl-2-256']() == {'source': 'facebook/DiT-XL-2-256', 'vae': 'stabilityai/sd-vae-ft-mse',
                                          'timestep_features': 'dit'}


def _sinusoidal(t, dim=256, max_period=10000, denominator=None):
    """Sinusoidal timestep features in float64, cosines first, frequencies max_period^(-k/denominator).
    The original DiT (`TimestepEmbedder.timestep_embedding`) uses denominator = half; diffusers' `Timesteps` with
    `downscale_freq_shift=1` uses half - 1."""
    half = dim // 2
    k = np.arange(half, dtype=np.float64)
    freqs = np.exp(-math.log(max_period) * k / (denominator or half))
    args = np.asarray(t, dtype=np.float64)[:, None] * freqs[None]
    return torch.from_numpy(np.concatenate([np.cos(args), np.sin(args)], axis=1))

def _dit(t): return _sinusoidal(t)
def _diffusers(t): return _sinusoidal(t, denominator=127)

def _conditioning_with(features, block, t, y):
    "A block's AdaLN conditioning built from given timestep features: MLP(features) + label embedding."
    emb = block.norm1.emb
    return emb.timestep_embedder(features.float()) + emb.class_embedder(y)

def test_timestep_features_follow_the_declaration_and_match_the_formulas(tmp_path):
    pipe = _tiny_pipeline(); pipe.save_pretrained(tmp_path)
    t, y = torch.arange(1000), torch.arange(1000) % 5
    plain = load_backbone(tmp_path, device='cpu')               # a diffusers-trained folder: diffusers' own features
    assert plain.timestep_features == 'diffusers' == get_timestep_features(plain.transformer)
    declare_timestep_features(tmp_path, 'dit')                   # a converted original-DiT folder says so
    dit = load_backbone(tmp_path, device='cpu')
    assert dit.timestep_features == 'dit' == get_timestep_features(dit.transformer)
    assert json.loads((tmp_path / 'model_index.json').read_text())['_mgd3_timestep_features'] == 'dit'
    with torch.no_grad():
        for bb, ref, other in ((dit, _dit, _diffusers), (plain, _diffusers, _dit)):
            for block in bb.transformer.transformer_blocks:
                got = block.norm1.emb.time_proj(t).double()
                assert (got - ref(t)).abs().max() < 2e-4
                assert (got - other(t)).abs().max() > 0.5
                cond = block.norm1.emb(t, y, hidden_dtype=torch.float32)
                torch.testing.assert_close(cond, _conditioning_with(ref(t), block, t, y), atol=1e-5, rtol=1e-5)
    # the whole network with DiT's features = the untouched diffusers model fed DiT's formula instead of its own
    x = torch.randn(4, 4, 4, 4, generator=torch.Generator().manual_seed(0)); ts = torch.tensor([999, 500, 100, 0])
    ys = torch.tensor([0, 1, 2, 4])
    pipe.transformer.eval()
    for block in pipe.transformer.transformer_blocks:
        block.norm1.emb.time_proj.forward = lambda tt: _dit(tt.numpy()).float()
    with torch.no_grad():
        torch.testing.assert_close(dit.transformer(x, timestep=ts, class_labels=ys).sample,
                                   pipe.transformer(x, timestep=ts, class_labels=ys).sample, atol=1e-4, rtol=1e-4)
    # the cosine similarity of the two features, as docs/diffusers_dit.md reports it
    cos = torch.nn.functional.cosine_similarity(_dit([999, 500, 100]), _diffusers([999, 500, 100]), dim=1)
    assert cos.numpy().round(2).tolist() == [0.49, 0.82, 0.99]

def test_timestep_features_argument_registry_and_hub_ids(tmp_path):
    _tiny_pipeline().save_pretrained(tmp_path)
    assert load_backbone(tmp_path, device='cpu', timestep_features='dit').timestep_features == 'dit'
    declare_timestep_features(tmp_path, 'dit')
    assert load_backbone(tmp_path, device='cpu', timestep_features='diffusers').timestep_features == 'diffusers'
    assert load_backbone('tiny-mnist', device='cpu').timestep_features == 'diffusers'   # trained through diffusers
    empty = tmp_path / 'empty'; empty.mkdir()
    assert _declared_features('facebook/DiT-XL-2-256', None, empty) == 'dit'            # the original DiT's weights
    assert _declared_features('facebook/DiT-XL-2-512', None, empty) == 'dit'
    assert _declared_features('someone/my-dit', None, empty) == 'diffusers'
    assert _declared_features('x', BACKBONES['dit-xl-2-256'](), empty) == 'dit'
    with pytest.raises(ValueError, match="unknown timestep_features 'k/half'"):
        load_backbone(tmp_path, device='cpu', timestep_features='k/half')
    idx = json.loads((tmp_path / 'model_index.json').read_text()); idx['_mgd3_timestep_features'] = 'adm'
    (tmp_path / 'model_index.json').write_text(json.dumps(idx))
    with pytest.raises(ValueError, match='declare_timestep_features'): load_backbone(tmp_path, device='cpu')
