"""The paper's baselines against independent re-implementations of their authors' code: D⁴M's generation stage
(prototype k-means, the noised start, the denoising from it), RDED's synthesis (crop scoring, selection, stitching),
each with negative controls; batch invariance of d4m; and d4m, rded_select and full_real through `mgd3.distill`."""
import json
from dataclasses import replace
import numpy as np, pytest, torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from sklearn.cluster import MiniBatchKMeans
from torchvision import transforms
import mgd3
import mgd3.rded as rded
from mgd3.backbone import load_backbone
from mgd3.config import DistillConfig
from mgd3.core import item_seed
from mgd3.d4m import d4m_prototypes, d4m_set
from mgd3.data import dataset_spec
from mgd3.evalnets import load_teacher
from mgd3.images import class_set_images
from mgd3.latents import cache_latents
from mgd3.methods import MethodContext, get_method
from mgd3.modes import discover_modes_cached
from mgd3.testing import TINY_RUN

IPC, STEPS, STRENGTH = 2, 10, 0.7

@pytest.fixture(scope='module')
def ctx(tmp_path_factory):
    "The embedded benchmark's trained backbone and MNIST-5k latents, IPC 2, 10 DDPM steps (diffusers' own spacing)."
    d = tmp_path_factory.mktemp('baselines')
    bb = load_backbone('tiny-mnist', device='cpu')
    cache = cache_latents(bb.vae, 'mnist5k', None, d/'latents', progress=False)
    cfg = DistillConfig.from_params(ipc=IPC, num_inference_steps=STEPS, stop_t=5, out_dir=str(d/'run'))
    return MethodContext(cfg, dataset_spec('mnist5k'), bb, cache, discover_modes_cached(cache, IPC), list(range(10)),
                         replace(cfg.sampler_settings(), spacing='scheduler'))

def _images(folder, spec):
    return torch.stack([class_set_images(folder, w) for w in spec.wnids]).flatten(0, 1)

# ---- D⁴M, written from their code: gen_prototype.py (a MiniBatchKMeans per class, partial_fit every km_expand·ipc
# latents of a shuffled loader, the leftover fitted only for the last prompt when >= ipc) and the latents2img
# pipeline (set_timesteps, get_timesteps(strength), scheduler.add_noise at the first kept timestep, then the
# scheduler's own step with the model's CFG output) ----

def _d4m_reference_prototypes(cache, seed, ipc, km_expand=1):
    "Their prototype_kmeans loop over one shuffled stream of every class's latents."
    orders = {c: torch.randperm(n, generator=torch.Generator().manual_seed(item_seed(seed, c, 0, 'd4m-order')))
              for c, n in enumerate(cache.counts())}
    stream = np.random.default_rng(0).permutation(np.repeat(np.arange(len(orders)), cache.counts()))
    nxt, lat = {c: 0 for c in orders}, {c: cache.class_latents(c) for c in orders}
    km = {c: MiniBatchKMeans(n_clusters=ipc, random_state=0, batch_size=km_expand * ipc, n_init='auto') for c in orders}
    pending = {c: [] for c in orders}
    for c in stream:   # the loader yields one latent at a time, classes interleaved
        z = lat[c][orders[c][nxt[c]]]; nxt[c] += 1
        pending[c].append(z.view(1, -1).double().numpy())
        if len(pending[c]) == km_expand * ipc:
            km[c].partial_fit(np.vstack(pending[c])); pending[c] = []
    if len(pending[c]) >= ipc: km[c].partial_fit(np.vstack(pending[c]))   # their final `if`, on the last prompt only
    return torch.cat([torch.tensor(km[c].cluster_centers_, dtype=torch.float32).view(ipc, *lat[c].shape[1:])
                      for c in orders])

def _d4m_reference_images(ctx, protos, seed, strength=STRENGTH, s=4.0):
    "img2img from each prototype with diffusers' DDPMScheduler (learned range), DiT's CFG on 3 channels."
    bb, tr = ctx.backbone, ctx.backbone.transformer
    sched = DDPMScheduler.from_config(bb.scheduler.config, variance_type='learned_range', clip_sample=False)
    sched.set_timesteps(STEPS)
    init = min(int(STEPS * strength), STEPS)
    timesteps = sched.timesteps[STEPS - init:]
    jobs = ctx.jobs(seed)
    gens = [torch.Generator().manual_seed(j.seed) for j in jobs]
    noise = torch.cat([torch.randn((1, *bb.latent_shape), generator=g) for g in gens])
    x = sched.add_noise(protos, noise, timesteps[:1].repeat(len(protos)))
    y = torch.tensor([j.label for j in jobs])
    with torch.no_grad():
        for t in timesteps:
            tt = torch.full((len(x),), int(t))
            out_c = tr(x, timestep=tt, class_labels=y).sample
            out_n = tr(x, timestep=tt, class_labels=torch.full_like(y, bb.null_class)).sample
            eps = torch.cat([out_n[:, :3] + s * (out_c[:, :3] - out_n[:, :3]), out_c[:, 3:4]], 1)
            x = sched.step(torch.cat([eps, out_c[:, 4:]], 1), t, x, generator=gens).prev_sample
        return bb.decode(x).clamp(0, 1)

@pytest.fixture(scope='module')
def d4m_reference(ctx):
    protos = _d4m_reference_prototypes(ctx.cache, 0, IPC)
    return protos, _d4m_reference_images(ctx, protos, 0)

def test_d4m_prototypes_are_their_kmeans(ctx, d4m_reference):
    ours = torch.cat([d4m_prototypes(ctx.cache.class_latents(c), IPC, item_seed(0, c, 0, 'd4m-order'))
                      for c in range(10)])
    torch.testing.assert_close(ours, d4m_reference[0], rtol=1e-6, atol=1e-6)

@pytest.mark.parametrize('perturb', [None, 'strength', 'km_expand'])
def test_d4m_matches_their_generation_and_negative_controls_fail(ctx, d4m_reference, tmp_path, perturb):
    kw = {'strength': 0.8} if perturb == 'strength' else {'km_expand': 2} if perturb == 'km_expand' else {}
    d4m_set(ctx, 0, tmp_path/'d4m', **kw)
    ours = _images(tmp_path/'d4m', ctx.spec).float()
    ref = mgd3.to_uint8(d4m_reference[1]).float()
    close = (ours - ref).abs().max() <= 1   # PNG quantisation of float32 results that agree to ~1e-5
    assert close == (perturb is None), (perturb, (ours - ref).abs().max())

def test_d4m_images_do_not_depend_on_batch_size(ctx, tmp_path):
    sets = []
    for bs in (1, 3):
        d4m_set(replace(ctx, config=replace(ctx.config, batch_size=bs)), 1, tmp_path/f'bs{bs}')
        sets.append({p.relative_to(tmp_path/f'bs{bs}'): p.read_bytes() for p in (tmp_path/f'bs{bs}').rglob('*.png')})
    assert len(sets[0]) == 10 * IPC and sets[0] == sets[1]

def test_img2img_hook_leaves_plain_sampling_alone(ctx):
    bb, kw = ctx.backbone, dict(seeds=[5, 6], num_inference_steps=4, progress=False, decode=False)
    plain = mgd3.generate(bb, [1, 2], **kw).latents
    assert torch.equal(mgd3.generate(bb, [1, 2], strength=0.5, **kw).latents, plain)   # no init_latents: no effect
    with pytest.raises(ValueError, match='expected one clean latent per image'):
        mgd3.generate(bb, [1, 2], init_latents=torch.zeros(3, *bb.latent_shape), **kw)
    with pytest.raises(ValueError, match='strength'):
        mgd3.generate(bb, [1, 2], init_latents=torch.zeros(2, *bb.latent_shape), strength=1.5, **kw)

# ---- RDED, written from their code: synthesize/main.py (mipc shuffled candidates, MultiRandomCrop = num_crop
# RandomResizedCrop(size // factor, ratio=(1, 1)) on the global RNG), utils.selector (normalise, zero-pad to size,
# softmax → −log of the class, argmin per image, argsort, first ipc·factor²) and utils.mix_images ----

def _rded_pad(x, size):
    v, h = size - x.size(2), size - x.size(3)
    return F.pad(x, (h // 2, h - h // 2, v // 2, v - v // 2))

def _rded_mix(img, out_size, factor, n):
    s, remained = out_size // factor, out_size % factor
    mixed, k, h_loc = torch.zeros((n, img.shape[1], out_size, out_size)), 0, 0
    for i in range(factor):
        h_r = s + 1 if i < remained else s
        w_loc = 0
        for j in range(factor):
            w_r = s + 1 if j < remained else s
            mixed[:n, :, h_loc:h_loc + h_r, w_loc:w_loc + w_r] = F.interpolate(img[k * n:(k + 1) * n], size=(h_r, w_r))
            w_loc += w_r; k += 1
        h_loc += h_r
    return mixed

def _rded_reference(ctx, teacher, seed, mipc, factor=2, num_crop=5):
    size, ipc, out = teacher.image_size, ctx.ipc, []
    norm = transforms.Normalize(teacher.mean.flatten().tolist(), teacher.std.flatten().tolist())
    for c, n in enumerate(ctx.cache.counts()):
        pick = torch.randperm(n, generator=torch.Generator().manual_seed(item_seed(seed, c, 0, 'rded-pick')))[:mipc]
        images = ctx.cache.class_images(c, None, pick).float() / 255
        crops = []
        for i, im in zip(pick.tolist(), images):
            torch.manual_seed(item_seed(seed, c, i, 'rded-crop'))
            cropper = transforms.RandomResizedCrop(size // factor, ratio=(1, 1), antialias=True)
            crops.append(torch.stack([norm(cropper(im)) for _ in range(num_crop)]))
        crops = torch.stack(crops)   # [mipc, m, C, s, s]
        s = crops.shape
        flat = crops.permute(1, 0, 2, 3, 4).reshape(s[0] * s[1], *s[2:])
        labels = torch.tensor([c]).repeat(s[0] * s[1])
        with torch.no_grad(): preds = teacher.net(_rded_pad(flat, size))
        dist = (-torch.log(F.softmax(preds, dim=1).gather(1, labels.view(-1, 1))))[:, 0].reshape(num_crop, s[0])
        index = torch.argmin(dist, 0)
        dist = dist[index, torch.arange(s[0])]
        chosen = flat.reshape(num_crop, s[0], *s[2:])[index, torch.arange(s[0])]
        chosen = chosen[torch.argsort(dist, descending=False)[:ipc * factor ** 2]]
        mixed = _rded_mix(chosen, size, factor, ipc)
        out.append(mixed * teacher.std.view(1, -1, 1, 1) + teacher.mean.view(1, -1, 1, 1))   # their denormalize
    return torch.cat(out)

MIPC = 24

@pytest.fixture(scope='module')
def rded_reference(ctx):
    teacher = load_teacher('mnist5k', device='cpu')
    return mgd3.to_uint8(_rded_reference(ctx, teacher, 0, MIPC).clamp(0, 1)).float()

def _argmax_pick(crops, scores, n):   # the least confident crop of each image: RDED's criterion turned around
    best = scores.argmax(1)
    keep = scores[torch.arange(len(scores)), best].argsort()[:n]
    return crops[keep, best[keep]]

_STITCH = rded.rded_stitch

def _column_stitch(crops, factor, size):   # the grid filled column by column
    return _STITCH(crops.view(factor, factor, -1, *crops.shape[1:]).transpose(0, 1).flatten(0, 2), factor, size)

@pytest.mark.parametrize('perturb', [None, 'num_crop', 'argmax', 'transpose'])
def test_rded_matches_their_synthesis_and_negative_controls_fail(ctx, rded_reference, tmp_path, monkeypatch, perturb):
    if perturb == 'argmax': monkeypatch.setattr(rded, 'rded_pick', _argmax_pick)
    if perturb == 'transpose': monkeypatch.setattr(rded, 'rded_stitch', _column_stitch)
    rded.rded_set(ctx, 0, tmp_path/'rded', mipc=MIPC, num_crop=4 if perturb == 'num_crop' else 5)
    ours = _images(tmp_path/'rded', ctx.spec).float()
    close = (ours - rded_reference).abs().max() <= 1
    assert close == (perturb is None), (perturb, (ours - rded_reference).abs().max())

def test_rded_crop_boxes_are_torchvisions(ctx):
    img = torch.rand(1, 37, 29)
    for s in range(20):
        torch.manual_seed(s)
        ref = [transforms.RandomResizedCrop.get_params(img, (0.08, 1.0), (1.0, 1.0)) for _ in range(5)]
        assert rded.rded_boxes(37, 29, 5, torch.Generator().manual_seed(s)).tolist() == [list(b) for b in ref]

# ---- through distill: the three methods in one tiny run; metrics and export ----

def _tiny_distill(pipe, out, methods):
    return mgd3.distill(**{**TINY_RUN, 'backbone': str(pipe), 'out_dir': str(out), 'methods': methods})

def test_distill_runs_d4m_and_rded(tiny_mnist_pipeline, tmp_path):
    out = tmp_path/'run'
    r = _tiny_distill(tiny_mnist_pipeline, out, ['d4m', 'rded_select'])
    m = json.loads((out/'metrics.json').read_text())
    for name in ('d4m', 'rded_select'):
        assert len(list((out/'images'/name/'seed0').rglob('*.png'))) == 10 * 2 and name in r.table
        assert 0 <= m['methods'][name]['coverage'] <= 1
    assert (mgd3.export_distilled(out, 'rded_select', dest=tmp_path/'rded')/'metadata.jsonl').exists()

@pytest.mark.slow   # full_real trains on all 4,000 training images: about 90 s on two shared cores
def test_distill_runs_the_three_methods_with_the_full_row(tiny_mnist_pipeline, tmp_path):
    out = tmp_path/'run'
    r = _tiny_distill(tiny_mnist_pipeline, out, ['d4m', 'rded_select', 'full_real'])
    m = json.loads((out/'metrics.json').read_text())
    assert set(m['methods']) == {'d4m', 'rded_select', 'full_real'} and 'full_real' in r.table
    assert len(list((out/'images'/'full_real').rglob('*.png'))) == 4000   # the whole train split (embedded data)
    assert m['methods']['full_real']['coverage'] == pytest.approx(1.0)   # the split covers itself
    full, d4m = (m['methods'][k]['accuracy']['convnet3']['mean'] for k in ('full_real', 'd4m'))
    assert full > d4m   # 4,000 real images beat 20 images of a random backbone
    with pytest.raises(ValueError, match='whole real training split'):
        mgd3.export_distilled(out, 'full_real', dest=tmp_path/'exp')

def test_rded_refuses_a_run_without_teacher(ctx, tmp_path):
    with pytest.raises(ValueError, match="this run has none"):
        get_method('rded_select').make(replace(ctx, config=replace(ctx.config, teacher=None)), 0, tmp_path/'r')

def test_the_methods_on_an_imagenet_tree_with_stable_diffusion_and_a_1000_class_teacher(tmp_path):
    "d4m on the `sd` kind (the protocol only), rded_select with a 1000-class teacher (its columns), full_real links."
    from mgd3.distill import prepare
    from mgd3.run import Run
    from mgd3.evalnets import create_evalnet, save_teacher
    from mgd3.testing import imagenet_tree
    from mgd3.text2img import tiny_text_backbone_folder
    root = imagenet_tree(tmp_path/'tree', train_per_class=4, val_per_class=1)
    teacher = save_teacher(tmp_path/'teacher', create_evalnet('convnet3', 1000, 32), dict(   # ImageNet-1K outputs
        net='convnet3', num_classes=1000, image_size=32, in_chans=3, mean=(0.5,) * 3, std=(0.5,) * 3))
    cfg = DistillConfig.from_params(
        dataset='imagenette', data_root=str(root), backbone=f'sd:{tiny_text_backbone_folder(tmp_path)}', ipc=1,
        seeds=[0], num_inference_steps=4, teacher=str(teacher), out_dir=str(tmp_path/'run'), device='cpu',
        mode_flips='none', methods=['d4m', 'rded_select', 'full_real'])
    run = Run.open(cfg)
    ctx = prepare(run, torch.device('cpu'))
    for name in cfg.methods: get_method(name).make(ctx, 0, run.image_dir(name, 0))
    for name in ('d4m', 'rded_select'):
        imgs = [class_set_images(run.image_dir(name, 0), w) for w in ctx.spec.wnids]
        assert all(x.shape == (1, 3, cfg.save_size, cfg.save_size) for x in imgs)   # SD runs save at 256 px
    assert all((run.image_dir('full_real', 0)/w).is_symlink() for w in ctx.spec.wnids)
