"""A tiny random 1-channel DiT pipeline for mnist5k (32×32 images → 4×8×8 latents): fast end-to-end runs in tests."""
from pathlib import Path
import torch

def tiny_mnist_pipeline(folder) -> Path:
    "Write a random DiTPipeline (AutoencoderKL 1→4×8×8, one-layer DiT with 10 classes + null) to `folder`; return it."
    from diffusers import AutoencoderKL, DDPMScheduler, DiTPipeline, DiTTransformer2DModel
    folder = Path(folder)
    if (folder / 'model_index.json').exists(): return folder
    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=1, out_channels=1, block_out_channels=(8, 16, 16),
                        down_block_types=('DownEncoderBlock2D',) * 3, up_block_types=('UpDecoderBlock2D',) * 3,
                        latent_channels=4, norm_num_groups=4, layers_per_block=1).eval()
    tr = DiTTransformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=8, num_layers=1,
                               num_attention_heads=2, attention_head_dim=8, num_embeds_ada_norm=10).eval()
    DiTPipeline(transformer=tr, vae=vae, scheduler=DDPMScheduler(clip_sample=False)).save_pretrained(folder)
    return folder

# the small settings: ipc=2, one seed, 4 steps, one epoch, one net, quick mode
TINY_RUN = dict(dataset='mnist5k', ipc=2, seeds=[0], num_inference_steps=4, stop_t=2, epochs=1, nets=['convnet3'],
                quick=True, device='cpu')
