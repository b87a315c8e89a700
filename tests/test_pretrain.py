"""Training both models for a few steps, saving, reloading through load_backbone, resuming; the packaged tiny-mnist."""
import math
from dataclasses import replace
import pytest, torch
from diffusers import DiTPipeline
from mgd3.backbone import ASSETS_DIR, load_backbone
from mgd3.core import load_tensors
from mgd3.pretrain import VAEConfig, DiTConfig, train_vae, train_dit, save_backbone_folder
from mgd3.sampler import generate
from mgd3.quality import measure_tiny_mnist

VCFG = VAEConfig(block_out_channels=(8, 16), norm_num_groups=4, steps=3, batch_size=6, checkpoint_every=2)
DCFG = DiTConfig(num_layers=2, num_attention_heads=2, attention_head_dim=8, steps=3, batch_size=6, checkpoint_every=2)

@pytest.fixture(scope='module')
def toy():
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (24, 1, 16, 16), dtype=torch.uint8, generator=g), torch.arange(24) % 4

@pytest.fixture(scope='module')
def trained(toy, tmp_path_factory):
    ck = tmp_path_factory.mktemp('ck')
    vae, vlog = train_vae(toy[0], VCFG, ck, device='cpu', progress=False)
    dit, dlog = train_dit(*toy, vae, DCFG, ckpt_dir=ck, device='cpu', progress=False)
    return vae, dit, vlog, dlog, ck

def test_training_is_seeded_and_learns_something(toy, trained):
    vae, dit, vlog, dlog, _ = trained
    assert len(vlog['loss']) == 3 and all(math.isfinite(l) for l in vlog['loss'] + dlog['loss'])
    vae2, _ = train_vae(toy[0], VCFG, None, device='cpu', progress=False)
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), vae2.state_dict().values()))
    assert vae.config.scaling_factor == vae2.config.scaling_factor > 0
    # the adaLN-Zero output layer moved away from zero: the DiT was optimised
    assert dit.proj_out_2.weight.abs().sum() > 0

def test_save_reload_gives_identical_outputs(trained, tmp_path):
    vae, dit, *_ = trained
    folder = save_backbone_folder(tmp_path/'bb', dit, vae, ['w', 'x', 'y', 'z'], DCFG)
    bb = load_backbone(folder, device='cpu')
    assert (bb.num_classes, bb.null_class, bb.class_names) == (4, 4, ('w', 'x', 'y', 'z'))
    assert bb.learned_sigma and bb.scheduler.config.variance_type == 'learned_range'
    x, t, y = torch.randn(3, 4, 8, 8), torch.tensor([0, 50, 999]), torch.tensor([0, 3, 4])
    img = torch.rand(3, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(bb.transformer(x, timestep=t, class_labels=y).sample, dit(x, timestep=t, class_labels=y).sample)
        assert torch.equal(bb.encode(img), vae.encode(img).latent_dist.mean * vae.config.scaling_factor)
    # diffusers reads the same folder, class names included
    pipe = DiTPipeline.from_pretrained(folder)
    assert pipe.labels == {'w': 0, 'x': 1, 'y': 2, 'z': 3}
    sample = lambda: generate(bb, [1, 2], seeds=[3, 3], guidance_scale=2.0, num_inference_steps=3, progress=False).images
    assert torch.equal(sample(), sample())

def test_resume_continues_exactly(toy, trained, tmp_path):
    vae, dit, _, dlog, ck = trained
    assert load_tensors(ck/'dit.safetensors')[1]['step'] == 3
    train_dit(*toy, vae, replace(DCFG, steps=2), ckpt_dir=tmp_path, device='cpu', progress=False)
    dit_b, log_b = train_dit(*toy, vae, DCFG, ckpt_dir=tmp_path, device='cpu', progress=False)
    assert log_b['loss'] == dlog['loss']
    assert all(torch.equal(a, b) for a, b in zip(dit.state_dict().values(), dit_b.state_dict().values()))
    # the VAE (whose config holds a tuple, stored as a JSON list) resumes too
    vae_a, _ = train_vae(toy[0], replace(VCFG, steps=2), tmp_path, device='cpu', progress=False)
    vae_b, _ = train_vae(toy[0], VCFG, tmp_path, device='cpu', progress=False)
    assert all(torch.equal(a, b) for a, b in zip(vae.state_dict().values(), vae_b.state_dict().values()))
    with pytest.raises(ValueError, match='another configuration'):
        train_dit(*toy, vae, replace(DCFG, label_dropout=0.5), ckpt_dir=tmp_path, device='cpu', progress=False)

def test_bad_inputs_explain_the_fix(toy):
    x, y = toy
    with pytest.raises(ValueError, match='uint8'): train_vae(x.float(), VCFG, device='cpu', progress=False)
    vae, _ = train_vae(x, replace(VCFG, steps=1), device='cpu', progress=False)
    with pytest.raises(ValueError, match='one label per image'): train_dit(x, y[:3], vae, DCFG, device='cpu')
    with pytest.raises(ValueError, match='num_classes'): train_dit(x, y, vae, DCFG, num_classes=2, device='cpu')

TINY = ASSETS_DIR/'tiny-mnist'

def test_packaged_tiny_mnist_goes_through_the_folder_code():
    by_name, by_folder = load_backbone('tiny-mnist', device='cpu'), load_backbone(TINY, device='cpu')
    assert (by_name.num_classes, by_name.null_class, by_name.latent_shape) == (10, 10, (4, 8, 8))
    assert by_name.class_names == tuple('0123456789') and by_name.learned_sigma
    assert (by_name.image_size, by_name.image_channels) == (32, 1)
    x, t, y = torch.randn(2, 4, 8, 8), torch.tensor([5, 600]), torch.tensor([7, 10])
    with torch.no_grad():
        assert torch.equal(by_name.transformer(x, timestep=t, class_labels=y).sample,
                           by_folder.transformer(x, timestep=t, class_labels=y).sample)
    files = [p for p in TINY.rglob('*') if p.is_file()]
    assert not [p for p in files if p.suffix in ('.bin', '.pt', '.pth', '.ckpt', '.pkl')]
    assert sum(p.stat().st_size for p in files) < 15e6
    card = (TINY/'README.md').read_text()
    assert 'class fidelity' in card and 'train** split only' in card

def test_tiny_mnist_latents_are_unit_scaled():
    from mgd3.data import load_mnist5k
    bb = load_backbone('tiny-mnist', device='cpu')
    x, _ = load_mnist5k('train')
    with torch.no_grad(): z = bb.encode(x[::8].float() / 127.5 - 1)
    assert 0.8 < z.std() < 1.2

@pytest.mark.slow
def test_tiny_mnist_class_fidelity_at_least_90_percent():
    q = measure_tiny_mnist('tiny-mnist')
    assert q.fidelity >= 0.9 and q.recon_mse < 0.02
