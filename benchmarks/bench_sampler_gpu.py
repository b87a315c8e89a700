"""DiT-XL/2-sized sampling throughput (random weights, no download), for a GPU when one is lent.

Measures images/s of mode-guided DDPM sampling with classifier-free guidance at batch 1 and at larger batches, in
bf16 autocast, and projects the time for ImageNet-1K IPC 50 (50,000 images, 50 steps). On a CPU, run it with small
numbers to check it works (e.g. --batches 1 2 --steps 2 --precision fp32).

    python benchmarks/bench_sampler_gpu.py --batches 1 64 128 256 --steps 50
"""
import argparse, time
import torch
from diffusers import AutoencoderKL, DDPMScheduler, DiTTransformer2DModel
from mgd3.backbone import Backbone
from mgd3.sampler import generate

def dit_xl2(device, dtype):
    "DiT-XL/2 (256 px, 4x32x32 latents, learned sigma) and the SD VAE architecture, randomly initialised."
    tr = DiTTransformer2DModel(num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
                               num_layers=28, sample_size=32, patch_size=2, num_embeds_ada_norm=1000)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                        down_block_types=('DownEncoderBlock2D',) * 4, up_block_types=('UpDecoderBlock2D',) * 4,
                        layers_per_block=2, scaling_factor=0.18215)
    for m in (tr, vae): m.to(device, dtype).eval().requires_grad_(False)
    sched = DDPMScheduler(clip_sample=False, variance_type='learned_range')
    return Backbone(transformer=tr, vae=vae, scheduler=sched, num_classes=1000, null_class=1000,
                    class_names=tuple(map(str, range(1000))), latent_shape=(4, 32, 32), scaling_factor=0.18215,
                    learned_sigma=True, image_size=256, image_channels=3, name='dit-xl-2 (random weights)')

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--batches', type=int, nargs='+', default=[1, 64, 128, 256])
    ap.add_argument('--steps', type=int, default=50); ap.add_argument('--precision', default='bf16')
    ap.add_argument('--total', type=int, default=50_000, help='images to project the time for')
    a = ap.parse_args()
    dev = torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    bb = dit_xl2(dev, torch.float32)
    print(f'device {dev} ({torch.cuda.get_device_name() if dev.type == "cuda" else "cpu"}), {a.precision}, '
          f'{a.steps} steps, DiT-XL/2 {sum(p.numel() for p in bb.transformer.parameters()) / 1e6:.0f}M params')
    base = None
    for b in a.batches:
        n = max(b, 2 * b if b > 1 else 2)   # at least two batches so the first one's warm-up is measured apart
        labels, seeds = [i % 1000 for i in range(n)], list(range(n))
        modes = torch.randn(n, 4, 32, 32)
        kw = dict(modes=modes, num_inference_steps=a.steps, batch_size=b, chunk_size=b, precision=a.precision,
                  stop_t=min(25, a.steps), progress=False)
        generate(bb, labels[:b], seeds=seeds[:b], **{**kw, 'modes': modes[:b]})   # warm-up (kernels, allocator)
        if dev.type == 'cuda': torch.cuda.synchronize()
        t0 = time.perf_counter(); generate(bb, labels, seeds=seeds, **kw)
        if dev.type == 'cuda': torch.cuda.synchronize()
        ips = n / (time.perf_counter() - t0); base = base or ips
        print(f'batch {b:4d}: {ips:8.2f} images/s ({ips / base:5.1f}x batch {a.batches[0]}), projected '
              f'{a.total / ips / 3600:7.2f} h for {a.total} images')

if __name__ == '__main__': main()
