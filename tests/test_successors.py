"""Issue 25, fidelity of the successor methods: each method's step against an independent implementation of the
authors' step written here (from their public code, or the paper's equations where there is none), on the tiny-mnist
backbone (`mgd3.testing.tiny_mnist_pipeline`), with a negative control: a deliberately changed method must fail."""
import math
from pathlib import Path
import numpy as np
import pytest, torch
from diffusers import DDPMScheduler
from diffusers.utils.torch_utils import randn_tensor
import mgd3
from mgd3.core import item_seed
from mgd3.sampler import SamplerSettings, backbone_denoiser, ddpm_coefficients, generate, sampling_timesteps
from mgd3.testing import tiny_mnist_pipeline

@pytest.fixture(scope='module')
def backbone(tmp_path_factory):
    return mgd3.load_backbone(tiny_mnist_pipeline(tmp_path_factory.mktemp('succ') / 'pipe'), device='cpu')

# ------------------------------------------------------------------ ManifoldGD (AyushRoy2001/ManifoldGD)
# The authors' code, diffusion/gaussian_diffusion.py: `_adaptive_radius`, `get_noisy_manifold`,
# `distribution_aware_guidance`, `p_sample_with_mode_guidance`; sample_new.py: `_build_divisive_tree_k2`,
# `_pick_ipc_leaves_by_levels`, `divisive_bisect_kmeans_ipc_l2_select_by_levels` (return_mode 'centroid').

def authors_radius(t, T, base, stop_t, max_mult, schedule, warm):
    if t <= stop_t or max_mult <= 1.0: return float(base)
    t_hi = T - 1; t_cut = max(stop_t, t_hi - warm)
    if t <= t_cut: return float(base)
    p = min(max((t - t_cut) / max(1, t_hi - t_cut), 0.0), 1.0)
    s = {'linear': p, 'cosine': 0.5 * (1 + math.cos(math.pi * (1 - p))),
         'exp': (math.exp(p) - 1) / (math.e - 1)}[schedule]
    return float(base * (1 + (max_mult - 1) * s))

def authors_noisy_manifold(center, alpha_bar, radius, gen, n=300):
    flat = center.reshape(1, -1)
    noise_dir = torch.randn(n, flat.shape[-1], generator=gen)   # their draws, in their order, from the image's stream
    noise_dir = noise_dir / torch.norm(noise_dir, dim=-1, keepdim=True)
    radii = torch.linspace(0.1, radius, n // 2)
    radii = torch.cat([radii, torch.rand(n // 2, generator=gen) * radius])
    samples = flat + radii.unsqueeze(1) * noise_dir[:len(radii)]
    noise = torch.randn(samples.shape, generator=gen)
    return samples * math.sqrt(alpha_bar) + math.sqrt(1 - alpha_bar) * noise

def authors_distribution_guidance(x_t, center, alpha_bar, radius, scale, bandwidth, tangent_dim, gen, k=12, ridge=1e-5):
    manifold = authors_noisy_manifold(center, alpha_bar, radius, gen)
    x = x_t.reshape(1, -1)
    distances = torch.cdist(x.double(), manifold.double()).float()
    _, idx = torch.topk(distances, k, largest=False, dim=1)
    neigh = manifold[idx.squeeze(0)].double()
    mu = neigh.mean(dim=0, keepdim=True)
    centered = neigh - mu
    cov = centered.T @ centered / (k - 1) + ridge * torch.eye(centered.shape[1], dtype=torch.float64)
    e, V = torch.linalg.eigh(cov)
    U = V[:, torch.argsort(e, descending=True)][:, :tangent_dim]
    to_mu = x.double() - mu
    manifold_vec = -(to_mu - to_mu @ U @ U.T)
    direction = manifold_vec / (torch.norm(manifold_vec, dim=-1, keepdim=True) + 1e-8)
    weight = torch.tanh(torch.min(distances, dim=1).values / bandwidth)
    return (scale * weight * direction).float().view_as(x_t)

AUTHORS = dict(mode_scale=0.1, manifold_scale=0.1, radius=0.05, bandwidth=0.2, tangent_dim=3, warm=5, max_mult=2.0,
               schedule='exp')

def authors_manifoldgd_chain(backbone, labels, seeds, modes, steps, stop_t, a=AUTHORS):
    "Their DDPM loop with mode guidance and the distribution-aware term (eps-space CFG from mgd3's network adapter)."
    sched = DDPMScheduler.from_config(dict(backbone.scheduler.config), clip_sample=False, variance_type='fixed_small')
    c = ddpm_coefficients(sched, sampling_timesteps(sched, steps, 'authors'))
    denoise = backbone_denoiser(backbone, 4.0, 3)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    mgens = [torch.Generator().manual_seed(item_seed(s, 0, 0, 'manifoldgd')) for s in seeds]
    x = randn_tensor((len(labels), *backbone.latent_shape), generator=gens, dtype=torch.float32)
    S = len(c.timesteps)
    with torch.no_grad():
        for i, t in enumerate(c.timesteps.tolist()):
            r = S - 1 - i   # their t: the respaced index
            eps, v = denoise(x, t, torch.tensor(labels))
            ab, ab_prev, beta = (float(q[i]) for q in (c.alpha_bar, c.alpha_bar_prev, c.beta))
            x0 = math.sqrt(1 / ab) * x - math.sqrt(1 / ab - 1) * eps
            mean = beta * math.sqrt(ab_prev) / (1 - ab) * x0 + (1 - ab_prev) * math.sqrt(1 - beta) / (1 - ab) * x
            frac = (v + 1) / 2
            logvar = frac * math.log(beta) + (1 - frac) * float(c.log_beta_tilde[i])
            z = randn_tensor(x.shape, generator=gens, dtype=torch.float32) if i < S - 1 else torch.zeros_like(x)
            term = 0
            if r > stop_t:
                phi = torch.full((len(x), 1), -1.0 / (1.0 ** 2 + 1e-8)).view(-1, 1, 1, 1)
                term = (phi * (x0 - modes)) * a['mode_scale'] * torch.exp(0.5 * logvar)
                rad = authors_radius(r, S, a['radius'], stop_t, a['max_mult'], a['schedule'], a['warm'])
                term = term + torch.stack([authors_distribution_guidance(x[b], modes[b], ab, rad, a['manifold_scale'],
                                                                         a['bandwidth'], a['tangent_dim'], mgens[b])
                                           for b in range(len(x))])
            x = mean + term + (0.0 if i == S - 1 else 1.0) * torch.exp(0.5 * logvar) * z
    return x

# deliberate changes to mgd3's method: each must make the comparison fail
PERTURB = {'none': (), 'tangent_dim 2': (('tangent_dim', 2),), 'no manifold term': (('manifold_scale', 0.0),),
           'manifold_scale 0.12': (('manifold_scale', 0.12),)}

@pytest.mark.parametrize('perturbation', list(PERTURB))
def test_manifoldgd_chain_matches_the_authors_step(backbone, perturbation):
    from mgd3.manifoldgd import MANIFOLDGD_PARAMS
    labels, seeds = [0, 3, 3, 7, 9], [11, 12, 13, 14, 15]
    modes = torch.randn(5, *backbone.latent_shape, generator=torch.Generator().manual_seed(3))
    params = tuple(dict(MANIFOLDGD_PARAMS, **dict(PERTURB[perturbation])).items())
    st = SamplerSettings(num_inference_steps=10, stop_t=3, guidance='manifoldgd', guidance_params=params)
    ours = generate(backbone, labels, seeds=seeds, modes=modes, settings=st, batch_size=2, decode=False,
                    progress=False).latents
    theirs = authors_manifoldgd_chain(backbone, labels, seeds, modes, 10, 3)
    close = torch.allclose(ours, theirs, atol=2e-4, rtol=1e-4)
    assert close == (perturbation == 'none'), (perturbation, (ours - theirs).abs().max())

STEP_PERTURB = {'none': {}, 'linear radius schedule': {'schedule': 'linear'}, 'no warm-up': {'max_mult': 1.0},
                'radius 0.1': {'radius': 0.1}, 'k 11': {'k_neighbors': 11}}

@pytest.mark.parametrize('perturbation', list(STEP_PERTURB))
def test_manifoldgd_term_matches_the_authors_at_each_step(backbone, perturbation):
    "The manifold term alone, at the warm-up steps and after, to 1e-6: each geometry setting is checked."
    from mgd3.manifoldgd import ManifoldGuidance, MANIFOLDGD_PARAMS
    S, stop_t, seeds = 50, 25, [21, 22, 23]
    g = torch.Generator().manual_seed(4)
    modes, x = (torch.randn(3, *backbone.latent_shape, generator=g) for _ in range(2))
    ours = ManifoldGuidance(modes, 0.1, stop_t, seeds=seeds,
                            **{**dict(MANIFOLDGD_PARAMS), **STEP_PERTURB[perturbation]})
    mgens = [torch.Generator().manual_seed(item_seed(s, 0, 0, 'manifoldgd')) for s in seeds]
    a, same = AUTHORS, []
    for r, ab in ((49, 0.9), (47, 0.7), (45, 0.5), (40, 0.2), (30, 0.01)):   # the same draws, in the same order
        rad = authors_radius(r, S, a['radius'], stop_t, a['max_mult'], a['schedule'], a['warm'])
        theirs = torch.stack([authors_distribution_guidance(x[b], modes[b], ab, rad, a['manifold_scale'],
                                                            a['bandwidth'], a['tangent_dim'], mgens[b])
                              for b in range(3)])
        same.append(float((ours.manifold_term(x, r, S, ab) - theirs).abs().max()))
    assert (max(same) < 1e-6) == (perturbation == 'none'), (perturbation, same)

def test_manifoldgd_term_differs_from_plain_mode_guidance(backbone):
    "The control of the control: with the manifold term the chain leaves MGD³'s, by more than the tolerance above."
    labels, seeds = [0, 3], [11, 12]
    modes = torch.randn(2, *backbone.latent_shape, generator=torch.Generator().manual_seed(3))
    from mgd3.manifoldgd import MANIFOLDGD_PARAMS
    man = generate(backbone, labels, seeds=seeds, modes=modes, num_inference_steps=10, stop_t=3, decode=False,
                   progress=False, guidance='manifoldgd', guidance_params=MANIFOLDGD_PARAMS).latents
    plain = generate(backbone, labels, seeds=seeds, modes=modes, num_inference_steps=10, stop_t=3, decode=False,
                     progress=False).latents
    assert (man - plain).abs().max() > 1e-2

def authors_divisive_layer(X, IPC, random_state=0, level_i=6):
    "Their divisive_layer modes (criterion 'sse', return_mode 'centroid'), transcribed."
    from sklearn.cluster import KMeans
    rng_pick = np.random.RandomState(random_state)
    rng = np.random.RandomState(random_state)
    def _sse(idx):
        if len(idx) <= 1: return 0.0
        return float(((X[idx] - X[idx].mean(axis=0, keepdims=True)) ** 2).sum())
    nodes, next_id = {}, [0]
    def new_node(idx, depth):
        nid = next_id[0]; next_id[0] += 1
        nodes[nid] = {'idx': np.asarray(idx, dtype=int), 'depth': depth}
        return nid
    leaves = [new_node(np.arange(X.shape[0]), 0)]
    while len(leaves) < IPC:
        ci = int(np.argmax([_sse(nodes[n]['idx']) for n in leaves]))
        nid = leaves.pop(ci); idx = nodes[nid]['idx']
        if len(idx) <= 1:
            leaves.append(nid)
            if all(len(nodes[n]['idx']) <= 1 for n in leaves): break
            continue
        sub = KMeans(n_clusters=2, n_init=10, random_state=rng.randint(1 << 31)).fit_predict(X[idx])
        left, right = idx[sub == 0], idx[sub == 1]
        if len(left) == 0 or len(right) == 0:
            rng.shuffle(idx); left, right = idx[:len(idx) // 2], idx[len(idx) // 2:]
        d = nodes[nid]['depth']
        leaves.extend([new_node(left, d + 1), new_node(right, d + 1)])
    leaf_depths = {}
    for n in leaves: leaf_depths.setdefault(nodes[n]['depth'], []).append(n)
    max_depth = max(leaf_depths)
    picked, used = [], set()
    for d in range(min(max(0, level_i - 1), max_depth), max_depth + 1):
        pool = [n for n in leaf_depths.get(d, []) if n not in used]
        if not pool: continue
        n = rng_pick.choice(pool); used.add(n); picked.append(n)
        if len(picked) >= IPC: break
    rem = IPC - len(picked)
    for d in range(max_depth, -1, -1):
        if rem <= 0: break
        pool = [n for n in leaf_depths.get(d, []) if n not in used]
        if not pool: continue
        rng_pick.shuffle(pool); take = min(rem, len(pool))
        picked.extend(pool[:take]); used.update(pool[:take]); rem -= take
    return np.stack([X[nodes[n]['idx']].mean(axis=0) for n in picked[:IPC]])

@pytest.mark.parametrize('ipc,level', [(5, 6), (8, 2), (10, 6)])
def test_manifoldgd_modes_match_the_authors_divisive_layer(ipc, level):
    from mgd3.data import load_mnist5k
    from mgd3.manifoldgd import hierarchical_modes
    x, y = load_mnist5k('train')
    latents = torch.nn.functional.avg_pool2d(x[y == 4][:150].float(), 4)   # one class, 150 images, 8×8 "latents"
    ours = hierarchical_modes(latents, ipc, seed=1, level=level)
    theirs = authors_divisive_layer(latents.double().flatten(1).numpy(), ipc, random_state=1, level_i=level)
    np.testing.assert_allclose(ours.flatten(1).numpy(), theirs, rtol=1e-6, atol=1e-6)
    # negative control: another seed is another tree or order, and the comparison catches it
    other = hierarchical_modes(latents, ipc, seed=2, level=level)
    assert not np.allclose(other.flatten(1).numpy(), theirs, atol=1e-6)

# ------------------------------------------------------------------ DDOQ (arXiv 2501.07681, no public code)
# The paper's weights: w_k = |{z in class : argmin_j ||z - z_j|| = k}| / |class| (the Voronoi mass of centroid k), and
# the training loss sum_k w_k l(f(x_k), y_k).

@pytest.mark.parametrize('perturbation', ['none', 'second nearest'])
def test_ddoq_weights_are_the_voronoi_masses(perturbation):
    from mgd3.ddoq import voronoi_weights
    g = torch.Generator().manual_seed(5)
    z = torch.cat([torch.randn(40, 4, 2, 2, generator=g) + 3 * c for c in range(3)])
    y = torch.arange(3).repeat_interleave(40)
    modes = mgd3.discover_modes(z, y, 4, seed=0)
    ours = voronoi_weights(modes.sizes)
    theirs = []
    for c in range(3):   # independent: each latent's nearest centroid (or, perturbed, the second nearest)
        d = torch.cdist(z[y == c].flatten(1).double(), modes.centroids[c].flatten(1).double())
        pick = d.argsort(1)[:, 0 if perturbation == 'none' else 1]
        theirs.append(torch.bincount(pick, minlength=4).double() / len(pick))
    assert torch.allclose(ours.double(), torch.stack(theirs), atol=1e-6) == (perturbation == 'none')

def _set_folder(root, n_per_class=12):
    from mgd3.images import set_image_path, write_images
    g = torch.Generator().manual_seed(0)
    for c in range(2):
        write_images(torch.rand(n_per_class, 1, 16, 16, generator=g) * 0.2 + 0.6 * c,
                     [set_image_path(root, f'c{c}', k) for k in range(n_per_class)])
    return root

def test_weighted_loss_with_uniform_weights_is_the_plain_loss_and_weights_follow_the_files(tmp_path):
    import json
    from mgd3.evaluate import evaluate, folder_weights
    root = _set_folder(tmp_path / 'set')
    table = {f'c{c}/{k}.png': float(1 + k + 20 * c) for c in range(2) for k in range(12)}
    (tmp_path / 'w.json').write_text(json.dumps(table))
    w = folder_weights(root, tmp_path / 'w.json', ['c0', 'c1'])
    # torchvision lists 0, 1, 10, 11, 2, ...: each weight must follow its own file
    from mgd3.images import open_image_folder
    ds, _ = open_image_folder(root, ['c0', 'c1'])
    assert w.tolist() == [table[Path(p).relative_to(root).as_posix()] for p, _ in ds.samples]
    (tmp_path / 'ones.json').write_text(json.dumps(dict.fromkeys(table, 0.5)))
    kw = dict(net='convnet3', epochs=2, seed=0, device='cpu', preset='imagenet', image_size=16, mean=(0.5,), std=(0.5,))
    plain = evaluate(str(root), str(root), **kw)
    uniform = evaluate(str(root), str(root), sample_weights=tmp_path / 'ones.json', **kw)
    weighted = evaluate(str(root), str(root), sample_weights=tmp_path / 'w.json', **kw)
    assert plain.history == uniform.history and uniform.config['sample_weights'] == 'ones.json'
    assert plain.config['sample_weights'] is None
    with pytest.raises(ValueError, match='no weight for'):
        (tmp_path / 'short.json').write_text(json.dumps({'c0/0.png': 1.0}))
        evaluate(str(root), str(root), sample_weights=tmp_path / 'short.json', **kw)
    assert weighted.config['sample_weights'] == 'w.json'
    # the weights act: with class c1's weight at 0 the network never learns c1 (half the test set)
    (tmp_path / 'c0only.json').write_text(json.dumps({k: float(k.startswith('c0')) for k in table}))
    kw['epochs'] = 6
    blind = evaluate(str(root), str(root), sample_weights=tmp_path / 'c0only.json', **kw)
    seeing = evaluate(str(root), str(root), **kw)
    assert blind.best_acc <= 50.0 < seeing.best_acc, (blind.history, seeing.history)
