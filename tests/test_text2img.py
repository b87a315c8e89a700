"""Stable Diffusion through mgd3's sampler: unguided DDIM equals diffusers' StableDiffusionPipeline; guidance works."""
import pytest, torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from mgd3.sampler import generate
from mgd3.text2img import load_text_backbone, tiny_text_backbone_folder

NAMES = ['tench', 'English springer', 'church']

@pytest.fixture(scope='module')
def sd(tmp_path_factory):
    folder = tiny_text_backbone_folder(tmp_path_factory.mktemp('sd'))
    return folder, load_text_backbone(folder, NAMES, device='cpu')

def test_unguided_ddim_matches_stable_diffusion_pipeline(sd):
    folder, bb = sd
    pipe = StableDiffusionPipeline.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    seeds = [3, 4, 5]
    ref = pipe(prompt=NAMES, num_inference_steps=6, guidance_scale=8.0, output_type='latent',
               generator=[torch.Generator().manual_seed(s) for s in seeds]).images
    g = generate(bb, [0, 1, 2], seeds=seeds, sampler='ddim', guidance_scale=8.0, num_inference_steps=6,
                 cfg_channels=None, decode=False, progress=False)
    assert ((g.latents - ref).norm() / ref.norm()).item() < 1e-5

def test_sd_ddpm_visits_the_schedulers_timesteps_and_guidance_pulls_to_modes(sd):
    _, bb = sd
    modes = torch.randn(3, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 2
    # 20 steps visit t = 951, 901, ..., 1; guiding while t > 500 (the authors' SD rule) is stop_t = 9
    kw = dict(seeds=[0, 1, 2], guidance_scale=8.0, num_inference_steps=20, variance='scheduler', decode=False,
              progress=False, stop_t=9)
    free = generate(bb, [0, 1, 2], **kw).latents
    guided = generate(bb, [0, 1, 2], modes=modes, mode_guidance_scale=0.1, **kw).latents
    assert (guided - modes).flatten(1).norm(dim=1).mean() < (free - modes).flatten(1).norm(dim=1).mean()
    with pytest.raises(ValueError, match="pass variance='scheduler'"):
        generate(bb, [0], seeds=[0], num_inference_steps=2, progress=False)

def test_prompts_default_to_class_names(sd):
    _, bb = sd
    assert bb.prompts == tuple(NAMES) and bb.num_classes == 3 and bb.null_class == 3
    assert not torch.equal(bb.prompt_embeds[0], bb.prompt_embeds[1])
