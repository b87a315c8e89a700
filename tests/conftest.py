"""Shared pytest setup: `slow` tests run only with MGD3_RUN_SLOW=1, `gpu` tests only where CUDA is present; a tiny
random DiT pipeline shaped like tiny-mnist (1x32x32 images, 4x8x8 latents, 10 classes) for fast end-to-end runs."""
import os, pytest, torch

def pytest_collection_modifyitems(config, items):
    run_slow = os.environ.get('MGD3_RUN_SLOW') == '1'
    for item in items:
        if 'slow' in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason='slow: set MGD3_RUN_SLOW=1 to run'))
        if 'gpu' in item.keywords and not torch.cuda.is_available():
            item.add_marker(pytest.mark.skip(reason='needs a CUDA device'))


def make_tiny_mnist_pipeline(folder, seed=0):
    "Save a randomly initialised DiTPipeline with tiny-mnist's shapes to `folder` (fast; no training)."
    from diffusers import AutoencoderKL, DDPMScheduler, DiTPipeline, DiTTransformer2DModel
    torch.manual_seed(seed)
    tr = DiTTransformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=8, num_layers=1,
                               num_attention_heads=2, attention_head_dim=8, num_embeds_ada_norm=10)
    vae = AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8, 16, 16), latent_channels=4,
                        down_block_types=('DownEncoderBlock2D',) * 3, up_block_types=('UpDecoderBlock2D',) * 3,
                        norm_num_groups=4, layers_per_block=1)
    DiTPipeline(transformer=tr.eval(), vae=vae.eval(), scheduler=DDPMScheduler()).save_pretrained(folder)
    return folder

@pytest.fixture(scope='session')
def tiny_mnist_pipeline(tmp_path_factory):
    return make_tiny_mnist_pipeline(tmp_path_factory.mktemp('tiny-mnist-random') / 'pipe')
