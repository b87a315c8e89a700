"""The evaluation protocols on real MNIST-5k: learning signal, label-shuffle control, determinism, soft labels, bad input."""
import pytest, torch
from mgd3.data import load_mnist5k
from mgd3.evaluate import (evaluate, cutmix, mixed_targets, augment_batch, summarize_results, get_eval_config,
                           load_image_folder, ImageSet)

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
    with pytest.raises(ValueError, match="'hard' or 'soft'"): ev((x, y), test, protocol='mixed')
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
