"""The evaluation protocols on real MNIST-5k: learning signal, label-shuffle control, determinism, soft labels, bad input."""
import pytest, torch
from mgd3.data import load_mnist5k
from mgd3.evaluate import evaluate, summarize_results
from mgd3.augment import cutmix, mixed_targets, augment_batch
from mgd3.protocols import get_eval_config
from mgd3.images import load_image_folder, ImageSet

@pytest.fixture(scope='module')
def mnist():
    xtr, ytr = load_mnist5k('train'); xte, yte = load_mnist5k('test')
    def per_class(y, n, start=0): return torch.cat([torch.nonzero(y == c).flatten()[start:start + n] for c in range(10)])
    te = per_class(yte, 20)  # 200 test images: enough to tell 10% from 40%, fast to score
    return dict(xtr=xtr, ytr=ytr, per_class=per_class, test=(xte[te], yte[te]))

def run(mnist, ipc, labels=None, **kw):
    idx = mnist['per_class'](mnist['ytr'], ipc)
    y = mnist['ytr'][idx] if labels is None else labels
    return evaluate((mnist['xtr'][idx], y), mnist['test'], net='convnet3', preset='quick', device='cpu', **kw)

def test_hard_labels_learn_and_shuffled_labels_do_not(mnist):
    real = run(mnist, 10)
    shuffled_y = mnist['ytr'][mnist['per_class'](mnist['ytr'], 10)][torch.randperm(100, generator=torch.Generator().manual_seed(0))]
    shuffled = run(mnist, 10, labels=shuffled_y)
    print(f"hard labels, convnet3, IPC 10, quick preset: best {real.best_acc:.1f}% final {real.final_acc:.1f}%; "
          f"shuffled labels: best {shuffled.best_acc:.1f}% (chance 10%)")
    assert real.best_acc > 40 and real.final_acc > 40
    assert shuffled.final_acc < 25
    for r in (real, shuffled): assert r.best_acc >= r.final_acc == r.history[-1][1]

def test_same_seed_same_history_other_seed_differs(mnist):
    idx = mnist['per_class'](mnist['ytr'], 2); xt, yt = mnist['test']
    a, b, c = (evaluate((mnist['xtr'][idx], mnist['ytr'][idx]), (xt[::4], yt[::4]), preset='quick', epochs=3, evals=3,
                        seed=s, device='cpu') for s in (5, 5, 6))
    assert a.history == b.history and [e for e, _ in a.history] == [1, 2, 3]
    assert a.history != c.history

def test_soft_labels_with_embedded_teacher_beat_hard_labels_at_ipc1(mnist):
    hard = run(mnist, 1, epochs=30, evals=3)
    soft = run(mnist, 1, protocol='soft', teacher='mnist5k', epochs=30, evals=3)
    print(f"IPC 1, convnet3, 30 epochs: hard {hard.best_acc:.1f}% (final {hard.final_acc:.1f}), "
          f"soft {soft.best_acc:.1f}% (final {soft.final_acc:.1f}); soft - hard = {soft.best_acc - hard.best_acc:+.1f} points")
    assert soft.config['teacher'] == 'mnist5k' and soft.config['protocol'] == 'soft'
    assert soft.best_acc > hard.best_acc

@pytest.mark.parametrize('seed', range(20))
def test_cutmix_mixes_labels_in_proportion_to_pasted_area(seed):
    B, H, W = 7, 13, 17  # odd sizes exercise the box clipping
    x = torch.arange(B, dtype=torch.float32).view(B, 1, 1, 1).expand(B, 2, H, W)
    m = cutmix(x, torch.Generator().manual_seed(seed), beta=1.0)
    y1, y2, x1, x2 = m.box
    assert m.ratio == 1 - (y2 - y1) * (x2 - x1) / (H * W)
    t = mixed_targets(torch.arange(B), m, B)
    for i in range(B):
        j = int(m.partner[i])
        own = (m.images[i] == i).float().mean().item()
        pasted = (m.images[i] == j).float().mean().item()
        if j != i:
            assert abs(own - m.ratio) < 1e-6 and abs(pasted - (1 - m.ratio)) < 1e-6
            assert abs(t[i, i].item() - own) < 1e-6 and abs(t[i, j].item() - pasted) < 1e-6
        else: assert t[i, i].item() == pytest.approx(1.0)

def test_augmentation_is_per_sample_and_on_the_input_device():
    x = torch.full((16, 3, 40, 40), 128, dtype=torch.uint8); x[:, :, :20] = 255
    out = augment_batch(x, 32, torch.Generator().manual_seed(0))
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32 and out.device == x.device
    flat = out.flatten(1)
    dist = torch.cdist(flat, flat) + torch.eye(16) * 1e9
    assert dist.min() > 0.1  # all 16 copies of one image were augmented differently

def test_summary_labels_what_varied():
    from mgd3.evaluate import EvalResult
    r = lambda a, s, g: EvalResult(a, a - 1, [], dict(seed=s, generation_seed=g))
    assert summarize_results([r(50, 0, 0), r(52, 0, 1)]).over == 'generation seeds'
    assert summarize_results([r(50, 0, 0), r(52, 1, 0)]).over == 'training seeds'
    assert summarize_results([r(50, 0, 0), r(52, 1, 1)], 'final_acc').mean == 50.0

# ---- bad input ------------------------------------------------------------------------------------------------
@pytest.fixture(scope='module')
def small(mnist):
    idx = mnist['per_class'](mnist['ytr'], 2)
    return mnist['xtr'][idx], mnist['ytr'][idx], mnist['test']

def ev(train, test, **kw): return evaluate(train, test, preset='quick', epochs=1, device='cpu', **kw)

def test_empty_class(small):
    x, y, test = small
    with pytest.raises(ValueError, match=r'train classes \[4\] have no images'): ev((x[y != 4], y[y != 4]), test)

def test_wrong_size_or_channels(small):
    x, y, (xt, yt) = small
    with pytest.raises(ValueError, match='protocol trains at 32 px'): ev((x, y), (xt[:, :, 2:30, 2:30], yt))
    with pytest.raises(ValueError, match='3 channels'): ev((x.expand(-1, 3, -1, -1), y), (xt, yt))
    with pytest.raises(ValueError, match=r'\[N, C, H, W\]'): ev((x[:, 0], y), (xt, yt))
    with pytest.raises(ValueError, match='normalises 1 channels'): evaluate((x.expand(-1, 3, -1, -1), y), (xt.expand(-1, 3, -1, -1), yt),
                                                                            preset='mnist5k', epochs=1, device='cpu')
    with pytest.raises(ValueError, match='teacher expects 1 channels'):
        ev((x.expand(-1, 3, -1, -1), y), (xt.expand(-1, 3, -1, -1), yt), protocol='soft', teacher='mnist5k')

def test_labels_out_of_range(small):
    x, y, test = small
    with pytest.raises(ValueError, match=r'span \[-1, 8\]'): ev((x, y - 1), test)
    with pytest.raises(ValueError, match=r'test labels must lie in \[0, 9\]'): ev((x, y), (test[0], test[1] + 1), num_classes=10)
    with pytest.raises(ValueError, match='integer class indices'): ev((x, y.float()), test)
    with pytest.raises(ValueError, match='1-D tensor of 20'): ev((x, y[:5]), test)

def test_unknown_preset_protocol_network_setting(small):
    x, y, test = small
    with pytest.raises(ValueError, match='valid presets'): evaluate((x, y), test, preset='cifar10')
    with pytest.raises(ValueError, match=r"unknown protocol 'mixed'; use one of \['hard', 'soft'\]"):
        ev((x, y), test, protocol='mixed')
    with pytest.raises(ValueError, match='valid names'): ev((x, y), test, net='vit')
    with pytest.raises(ValueError, match='unknown evaluation settings'): ev((x, y), test, learning_rate=0.1)

def test_image_folders_train_and_test(tmp_path, small):
    from PIL import Image
    x, y, (xt, yt) = small
    for root, xs, ys in ((tmp_path / 'images', x, y), (tmp_path / 'val', xt[::10], yt[::10])):
        for i, (im, c) in enumerate(zip(xs, ys)):
            (root / f"n{int(c):02d}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(im[0].numpy()).save(root / f"n{int(c):02d}" / f"{i}.png")
    s = load_image_folder(tmp_path / 'images')
    assert s.images.shape == (20, 1, 32, 32) and s.classes[:2] == ['n00', 'n01'] and torch.equal(s.images, x)
    r = ev(tmp_path / 'images', tmp_path / 'val')
    assert r.config['num_classes'] == 10 and r.config['num_test'] == 20
    (tmp_path / 'images' / 'n10').mkdir()
    with pytest.raises(FileNotFoundError, match='at least one image'): ev(tmp_path / 'images', tmp_path / 'val')
    with pytest.raises(FileNotFoundError, match='is not a folder'): ev(tmp_path / 'nothing', tmp_path / 'val')

@pytest.mark.gpu
def test_augmentation_is_the_same_on_cuda_and_cpu():
    x = torch.randint(0, 256, (8, 3, 48, 48), dtype=torch.uint8)
    a = augment_batch(x, 32, torch.Generator().manual_seed(0))
    b = augment_batch(x.cuda(), 32, torch.Generator().manual_seed(0))
    assert b.device.type == 'cuda' and torch.allclose(a, b.cpu(), atol=1e-4)
    m1, m2 = cutmix(a, torch.Generator().manual_seed(1)), cutmix(b, torch.Generator().manual_seed(1))
    assert m1.ratio == m2.ratio and torch.allclose(m1.images, m2.images.cpu(), atol=1e-4)

# ---- the protocols against IDC's and RDED's code, re-expressed here -----------------------------------------------
import math, itertools
from dataclasses import replace
from torch import nn
from mgd3.evaluate import make_optimizer, param_groups, eval_epochs, train_and_eval
from mgd3.protocols import epochs_for, resolve_config, rded_batch_size
from mgd3.augment import shuffle_patches, color_jitter
from mgd3.images import prepare_test_set
from mgd3.evalnets import create_evalnet, load_teacher, Teacher

def idc_ipc_epoch(ipc, nclass):
    "IDC's argument.py `ipc_epoch` (factor 1, no bound), as written there."
    if ipc == 1: epoch = 3000
    elif ipc <= 10: epoch = 2000
    elif ipc <= 50: epoch = 1500
    elif ipc <= 200: epoch = 1000
    elif ipc <= 500: epoch = 500
    else: epoch = 300
    if nclass == 100:
        epoch = int((2 / 3) * epoch)
        epoch = epoch - (epoch % 100)
    return epoch

def test_epoch_table_is_idcs_ipc_epoch_on_a_grid():
    for nclass, ipc in itertools.product((1, 2, 10, 20, 50, 99, 100, 101, 200, 1000), range(1, 1201)):
        assert epochs_for(ipc, nclass) == idc_ipc_epoch(ipc, nclass), (nclass, ipc)

@pytest.mark.parametrize('nclass', [10, 99, 100, 101, 200, 1000])
def test_many_class_optimiser_is_minimaxs_rule_and_idcs_is_a_switch(nclass):
    "Minimax's argument.py (MGD³'s evaluator): nclass > 100 → lr 0.1, wd 1e-4, batch max(128, b); IDC's: nclass >= 100."
    def rule(n, bs, from_100):
        return (0.1, 1e-4, max(128, bs)) if (n >= 100 if from_100 else n > 100) else (0.01, 5e-4, bs)
    for from_100 in (False, True):
        cfg = get_eval_config('imagenet', **({'large_nclass': 100} if from_100 else {}))
        r = resolve_config(cfg, protocol='hard', num_classes=nclass, ipc=10)
        assert (r.lr, r.weight_decay, r.batch_size) == rule(nclass, 64, from_100)
    soft = resolve_config(get_eval_config('rded'), protocol='soft', num_classes=nclass, ipc=10)
    assert (soft.soft_lr, soft.soft_weight_decay) == (1e-3, 0.01)   # the soft protocol has its own settings
    kept = resolve_config(get_eval_config('imagenet', lr=0.03), protocol='hard', num_classes=nclass, ipc=10,
                          explicit={'lr'})
    assert kept.lr == 0.03

def rded_argparse_batch(ipc, nclass):
    "RDED's argument.py: re_batch_size by IPC, doubled for 100 or 1000 classes, capped at ipc * nclass."
    b = 0
    if ipc == 50: b = 100
    elif ipc == 10: b = 50
    elif ipc == 1: b = 10
    if nclass == 10: b *= 1
    if nclass == 100: b *= 2
    if nclass == 1000: b *= 2
    return min(b, ipc * nclass)

def test_batch_size_is_rdeds_and_extends_to_other_ipcs():
    for ipc, nclass in itertools.product((1, 10, 50), (2, 10, 100, 200, 1000)):
        assert rded_batch_size(ipc, nclass) == rded_argparse_batch(ipc, nclass), (ipc, nclass)
    assert rded_argparse_batch(20, 100) == 0   # RDED has no batch size for IPC 20 (its loader refuses 0)
    assert [rded_batch_size(i, 100) for i in (5, 20, 100)] == [20, 100, 200]   # mgd3: the largest listed IPC below
    r = resolve_config(get_eval_config('rded'), protocol='soft', num_classes=1000, ipc=50)
    assert (r.batch_size, r.batch_rule) == (200, 'fixed')

def test_cosine_schedule_is_rdeds_lambda():
    E = 300
    net = nn.Linear(4, 2)
    opt, sched = make_optimizer(net, get_eval_config('rded'), 'soft', E)
    rded = lambda step: 0.5 * (1.0 + math.cos(math.pi * step / E / 2)) if step <= E else 0   # validation/main.py
    for e in range(E):
        assert opt.param_groups[0]['lr'] == pytest.approx(1e-3 * rded(e), rel=1e-12)
        opt.step(); sched.step()
    assert opt.param_groups[0]['lr'] == pytest.approx(5e-4)      # RDED never decays below half the initial LR
    opt, sched = make_optimizer(net, get_eval_config('quick'), 'soft', 15)   # mgd3's earlier soft schedule: down to 0
    for _ in range(15): opt.step(); sched.step()
    assert opt.param_groups[0]['lr'] == pytest.approx(0.0, abs=1e-18)

def rded_shuffle_patches(img, factor, col_order, row_order):
    "RDED's validation/utils.py ShufflePatches on one [C, H, W] image, with the shuffles given as index lists."
    def shuffle_weight(img, order):
        h, w = img.shape[1:]
        tw = w // factor   # (RDED also computes th = h // factor, which it never uses)
        patches = []
        for i in range(factor):
            i = i * tw
            if i != factor - 1: patches.append(img[..., i:i + tw])
            else: patches.append(img[..., i:])
        return torch.cat([patches[k] for k in order], -1)
    img = shuffle_weight(img, col_order)
    img = img.permute(0, 2, 1)
    img = shuffle_weight(img, row_order)
    return img.permute(0, 2, 1)

@pytest.mark.parametrize('factor,size', [(2, (8, 8)), (2, (7, 9)), (3, (12, 15))])
def test_shuffle_patches_is_rdeds(factor, size):
    x = torch.randint(0, 256, (300, 3, *size), dtype=torch.uint8)
    out = shuffle_patches(x, factor, torch.Generator().manual_seed(0))
    perms = list(itertools.permutations(range(factor)))
    seen = []
    for i in range(len(x)):
        match = [(c, r) for c in perms for r in perms if torch.equal(rded_shuffle_patches(x[i], factor, c, r), out[i])]
        assert match, f"image {i} is not a ShufflePatches of its input"
        seen.append(match[0])
    counts = torch.tensor([seen.count(k) for k in itertools.product(perms, perms)], dtype=torch.float64)
    from scipy.stats import chi2   # every (column, row) permutation pair, uniformly (random.shuffle's law)
    expected = len(x) / len(counts)
    assert counts.min() > 0 and ((counts - expected) ** 2 / expected).sum() < chi2.ppf(0.999, len(counts) - 1)

def idc_color_jitter(img, factors, order):
    "IDC's misc/utils.py ColorJitter on one [3, H, W] image: Brightness/Contrast/Saturation as `img.lerp(gs, alpha)`."
    def gray(im):
        gs = im.clone()
        gs[0] = 0.299 * im[0] + 0.587 * im[1] + 0.114 * im[2]
        gs[1], gs[2] = gs[0], gs[0]
        return gs
    ops = {0: lambda im, a: im.lerp(torch.zeros_like(im), a),
           1: lambda im, a: im.lerp(torch.full_like(im, gray(im).mean().item()), a),
           2: lambda im, a: im.lerp(gray(im), a)}
    for op in order: img = ops[op](img, 1 - factors[op])   # alpha = 1 - factor: the same uniform law
    return img

def test_idc_jitter_is_idcs_per_image_colorjitter():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(16, 3, 6, 6, generator=g)
    factors = 0.6 + 0.8 * torch.rand(3, 16, generator=g)
    order = torch.rand(16, 3, generator=g).argsort(1)
    out = color_jitter(x.clone(), factors, order, clamp=False)
    for i in range(16):
        ref = idc_color_jitter(x[i], factors[:, i].tolist(), order[i].tolist())
        torch.testing.assert_close(out[i], ref, rtol=1e-5, atol=1e-5)
    # in augment_batch: orders differ per image and nothing is clamped
    bright = torch.full((64, 3, 16, 16), 240, dtype=torch.uint8)
    a = augment_batch(bright, 16, torch.Generator().manual_seed(0), lighting=0, jitter_style='idc')
    b = augment_batch(bright, 16, torch.Generator().manual_seed(0), lighting=0, jitter_style='clamped')
    assert a.max() > 1.05 and b.max() <= 1

def test_no_weight_decay_on_biases_and_norms_by_parameter_name():
    "RDED's get_parameters: decay only on names containing 'weight' with >= 2 dims; checked by module type here."
    for name in ('resnet18_bn', 'resnet18', 'resnet_ap10', 'convnet3'):
        net = create_evalnet(name, 10, 32)
        decayed = {f'{mn}.weight' for mn, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
        groups = param_groups(net, 0.01, decay_bias_and_norm=False)
        names = {id(p): n for n, p in net.named_parameters()}
        assert {names[id(p)] for p in groups[0]['params']} == decayed and groups[0]['weight_decay'] == 0.01
        rest = {names[id(p)] for p in groups[1]['params']}
        assert rest == set(names.values()) - decayed and groups[1]['weight_decay'] == 0.0
        norm_params = {f'{mn}.{pn}' for mn, m in net.named_modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))
                       for pn, _ in m.named_parameters(recurse=False)}
        assert all(n.endswith('.bias') or n in norm_params for n in rest) and norm_params <= rest
    opt, _ = make_optimizer(create_evalnet('resnet18_bn', 10, 32), get_eval_config('rded'), 'soft', 300)
    assert isinstance(opt, torch.optim.AdamW) and opt.defaults['betas'] == (0.9, 0.999) and opt.defaults['lr'] == 1e-3
    assert [g['weight_decay'] for g in opt.param_groups] == [0.01, 0.0]
    opt, _ = make_optimizer(create_evalnet('resnet18', 10, 32), get_eval_config('imagenet'), 'hard', 300)
    assert isinstance(opt, torch.optim.SGD) and len(opt.param_groups) == 1
    assert opt.param_groups[0]['weight_decay'] == 5e-4

def test_presets_are_the_public_code_settings():
    "Each preset value as written in RDED's argument.py, validation/main.py, scripts and IDC/Minimax's argument.py, data.py."
    rded = dict(re_epochs=300, adamw_lr=0.001, adamw_weight_decay=0.01, temperature=20, cutmix=1.0, factor=2,
                max_scale_crops=1, input_size=224)
    c = get_eval_config('rded')
    assert (c.soft_epochs, c.soft_lr) == (rded['re_epochs'], rded['adamw_lr'])
    assert c.soft_weight_decay == rded['adamw_weight_decay']
    assert c.temperature == rded['temperature']
    assert (c.cutmix_beta, c.cutmix_prob, c.shuffle_patches) == (rded['cutmix'], 1.0, rded['factor'])
    assert c.scale == (1 / rded['factor'], rded['max_scale_crops']) and (c.jitter, c.lighting, c.flip) == (0, 0, True)
    assert (c.image_size, c.test_resize) == (rded['input_size'], rded['input_size'] // 7 * 8)
    assert (c.eval_every, c.eval_after, c.batch_rule) == (10, 0.8, 'rded')
    assert (c.decay_bias_and_norm, c.extra_train_forward) == (False, True)
    assert c.mean == (0.485, 0.456, 0.406) and c.std == (0.229, 0.224, 0.225)
    # RDED's test schedule: `if epoch % 10 == 9 or epoch == E - 1: if epoch > E * 0.8: validate`
    for E in (300, 50, 7):
        assert eval_epochs(c, E) == [e + 1 for e in range(E) if (e % 10 == 9 or e == E - 1) and e > E * 0.8]
    h = get_eval_config('imagenet')
    assert (h.lr, h.momentum, h.weight_decay, h.batch_size, h.gamma) == (0.01, 0.9, 5e-4, 64, 0.2)
    assert (h.cutmix_beta, h.cutmix_prob, h.scale, h.jitter, h.lighting) == (1.0, 1.0, (0.5, 1.0), 0.4, 0.1)
    assert (h.jitter_style, h.test_resize, h.decay_bias_and_norm, h.large_nclass) == ('idc', None, True, 101)
    assert [int(f * E) for f in h.milestones for E in (1300,)] == [2 * 1300 // 3, 5 * 1300 // 6]
    assert eval_epochs(h, 1300) == [e for e in range(1, 1301) if e % (1300 // 100) == 0]   # IDC: epoch % (E//100) == 0
    assert get_eval_config('imagenet', protocol='soft') == c
    assert get_eval_config('mnist5k').jitter_style == get_eval_config('quick').jitter_style == 'clamped'
    with pytest.raises(ValueError, match="soft-label protocol; pass protocol='soft'"):
        get_eval_config('rded', protocol='hard')

def test_test_transform_is_torchvisions(tmp_path):
    "Resize(256) → CenterCrop(224) (RDED) and Resize(224) → CenterCrop(224) (IDC) on PIL images, as torchvision does."
    from PIL import Image
    from torchvision import transforms as T
    sizes = [(300, 450), (360, 240), (280, 350), (224, 224)]   # long sides integral after both resizes
    for i, (h, w) in enumerate(sizes):
        yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
        arr = torch.stack([127 + 100 * torch.sin(xx / 7.0), 127 + 100 * torch.cos(yy / 9.0),
                           (xx + yy) % 256 * 0.5 + 60], -1)
        (tmp_path / 'c0').mkdir(exist_ok=True)
        Image.fromarray(arr.round().clamp(0, 255).to(torch.uint8).numpy()).save(tmp_path / 'c0' / f'{i}.png')
    for resize in (256, None):
        got = prepare_test_set(tmp_path, image_size=224, test_resize=resize).images.float()
        tf = T.Compose([T.Resize(resize or 224), T.CenterCrop(224), T.PILToTensor()])
        ref = torch.stack([tf(Image.open(tmp_path / 'c0' / f'{i}.png')) for i in range(len(sizes))]).float()
        assert (got - ref).abs().mean() < 0.5, (resize, (got - ref).abs().mean())   # interpolation rounding only

def test_extra_train_forward_updates_batchnorm_statistics_twice(mnist):
    "RDED's no-grad train-mode forward of the mixed batch: the BN running mean moves by 1 - 0.9² instead of 0.1."
    idx = mnist['per_class'](mnist['ytr'], 2)
    train, test = ImageSet(mnist['xtr'][idx], mnist['ytr'][idx]), ImageSet(mnist['test'][0][:10], mnist['test'][1][:10])
    teacher = load_teacher('mnist5k', device='cpu')
    cfg = get_eval_config('rded', image_size=32, mean=(0.1307,), std=(0.3081,), test_resize=None, batch_rule='fixed',
                          batch_size=20)
    nets = {}
    for extra in (False, True):
        torch.manual_seed(0); net = create_evalnet('resnet18_bn', 10, 32, in_chans=1)
        train_and_eval(net, train, test, cfg=replace(cfg, extra_train_forward=extra), epochs=1, num_classes=10,
                       image_size=32, protocol='soft', teacher=teacher, seed=0)
        nets[extra] = net
    one, two = nets[False].bn1, nets[True].bn1       # one step, the same batch, the same weights before it
    m = one.running_mean / 0.1                        # the batch mean seen by the first BN layer
    torch.testing.assert_close(two.running_mean, (1 - 0.9 ** 2) * m, rtol=1e-4, atol=1e-6)
    v = (one.running_var - 0.9) / 0.1
    torch.testing.assert_close(two.running_var, 0.81 + 0.19 * v, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(nets[True].conv1.weight, nets[False].conv1.weight)   # the step itself is unchanged

def test_one_thousand_class_teacher_restricted_to_the_subset(mnist):
    "teacher_classes picks the teacher's logits of the student's classes: a padded, permuted teacher trains identically."
    base = load_teacher('mnist5k', device='cpu')
    perm = torch.randperm(13, generator=torch.Generator().manual_seed(0))
    class Padded(nn.Module):   # 13 outputs: the 10 digit logits and 3 large distractors, in a shuffled order
        def forward(self, x):
            z = torch.cat([base.net(x), torch.full((len(x), 3), 50.0)], 1)
            return z[:, perm]
    big = Teacher(Padded(), image_size=32, mean=base.config['mean'], std=base.config['std'], config={'net': 'padded'},
                  num_classes=13)
    where = [int((perm == c).nonzero()) for c in range(10)]
    kw = dict(protocol='soft', epochs=2, evals=1)
    a = run(mnist, 1, teacher=base, **kw)
    b = run(mnist, 1, teacher=big, teacher_classes=where, **kw)
    assert a.history == b.history and b.config['teacher_classes'] == where
    with pytest.raises(ValueError, match='predicts 13 classes but the student 10; pass teacher_classes='):
        run(mnist, 1, teacher=big, **kw)

def test_rded_protocol_learns_from_the_teacher(mnist):
    "RDED's protocol at 32 px on MNIST-5k (IPC 2, batch 10, ShufflePatches, 20 epochs, one test after 80 %)."
    idx = mnist['per_class'](mnist['ytr'], 2)
    r = evaluate((mnist['xtr'][idx], mnist['ytr'][idx]), mnist['test'], net='convnet3', protocol='soft',
                 teacher='mnist5k', preset='rded', epochs=20, image_size=32, mean=(0.1307,), std=(0.3081,),
                 test_resize=None, device='cpu')
    print(f"rded protocol, convnet3, IPC 2, 20 epochs: best {r.best_acc:.1f}% final {r.final_acc:.1f}% (chance 10%)")
    assert r.config['batch_size'] == 10 and [e for e, _ in r.history] == [20]
    assert r.best_acc > 30

@pytest.mark.slow
def test_rded_protocol_with_the_batchnorm_student(mnist):
    idx = mnist['per_class'](mnist['ytr'], 10)
    r = evaluate((mnist['xtr'][idx], mnist['ytr'][idx]), mnist['test'], net='resnet18_bn', protocol='soft',
                 teacher='mnist5k', preset='rded', epochs=30, image_size=32, mean=(0.1307,), std=(0.3081,),
                 test_resize=None, device='cpu')
    print(f"rded protocol, resnet18_bn, IPC 10, 30 epochs: best {r.best_acc:.1f}% final {r.final_acc:.1f}%")
    assert r.best_acc > 40

def test_test_split_given_at_256_is_centre_cropped(mnist):
    x, y = mnist['test']
    big = torch.nn.functional.interpolate(x.float(), size=(36, 36), mode='bilinear').round().to(torch.uint8)
    idx = mnist['per_class'](mnist['ytr'], 1)
    r = evaluate((mnist['xtr'][idx], mnist['ytr'][idx]), (big, y), net='convnet3', preset='quick', image_size=32,
                 test_resize=36, epochs=1, device='cpu')
    assert r.config['test_transform'] == 'centre crop 32 of the given 36 px'
    with pytest.raises(ValueError, match='protocol trains at 32 px'):
        evaluate((mnist['xtr'][idx], mnist['ytr'][idx]), (big[..., :34, :34], y), net='convnet3', preset='quick',
                 image_size=32, test_resize=36, epochs=1, device='cpu')


# ---- large image sets streamed from disk ------------------------------------------------------------------------------
import numpy as np

def _folder(root, classes, per, size, rng, uneven=False):
    from PIL import Image
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(per):
            h, w = (rng.integers(size, 2 * size, 2) if uneven else (size, size))
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / c / f'{i}.png')
    return root

@pytest.mark.parametrize('protocol', ['hard', 'soft'])
def test_streamed_and_in_memory_folders_give_the_same_accuracy(tmp_path, protocol):
    "The DataLoader path (decode and resize in workers) trains and tests exactly as the same folders in memory."
    from mgd3.evalnets import Teacher, create_evalnet
    rng = np.random.default_rng(0)
    classes = ['n01', 'n02', 'n03']
    train = _folder(tmp_path / 'train', classes, 4, 40, rng)
    test = _folder(tmp_path / 'val', classes + ['n99'], 5, 36, rng, uneven=True)   # an extra class is ignored
    torch.manual_seed(0)
    teacher = Teacher(create_evalnet('convnet3', 3, 32), image_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)
    kw = dict(net='convnet3', protocol=protocol, preset='imagenet', epochs=3, evals=3, image_size=32, test_resize=36,
              teacher=teacher if protocol == 'soft' else None, device='cpu', seed=1)
    mem = evaluate(str(train), str(test), stream=False, **kw)
    streamed = evaluate(str(train), str(test), stream=True, num_workers=2, **kw)
    assert mem.config['streamed'] == [False, False] and streamed.config['streamed'] == [True, True]
    assert len(mem.history) == (3 if protocol == 'hard' else 1)   # RDED tests past 80 % of training only
    for (e1, a1), (e2, a2) in zip(mem.history, streamed.history):
        assert e1 == e2 and abs(a1 - a2) <= 1e-6   # tolerance: float summation order only
    assert mem.config['num_test'] == streamed.config['num_test'] == 15

def test_folders_above_the_threshold_are_streamed(tmp_path, monkeypatch):
    import importlib
    ev = importlib.import_module('mgd3.images')   # the module that reads and streams image folders
    root = _folder(tmp_path / 'sets', ['a', 'b'], 3, 20, np.random.default_rng(1))
    assert isinstance(ev.as_image_set(root, stream=None), ev.ImageSet)   # 6 × 3×20×20 bytes: in memory
    monkeypatch.setattr(ev, 'STREAM_BYTES', 1000)
    s = ev.as_image_set(root, stream=None)
    assert isinstance(s, ev.StreamedImageSet) and s.nbytes == 6 * 3 * 20 * 20 and s.classes == ['a', 'b']
    t = ev.prepare_test_set(root, image_size=16, test_resize=18, stream=None)
    assert isinstance(t, ev.StreamedImageSet) and t.image_shape == (3, 16, 16)
    assert torch.equal(next(ev.image_batches(t, [torch.arange(6)])),
                       ev.prepare_test_set(root, image_size=16, test_resize=18, stream=False).images)
    uneven = _folder(tmp_path / 'uneven', ['a'], 3, 20, np.random.default_rng(2), uneven=True)
    with pytest.raises(ValueError, match='pass image_size='): ev.as_image_set(uneven, stream=True)
