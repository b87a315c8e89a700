"""Diversity, representativeness, mode coverage and the selection baselines, on constructed and on MNIST-5k features."""
import math, pytest, torch
from mgd3.metrics import (select_random_real, select_herding, class_kmeans, select_closest_to_centroids, mode_coverage,
                          distillation_metrics, plot_tsne)

def blobs(k=5, per=20, classes=2, spread=0.05, seed=0):
    "k tight, well-separated blobs per class; returns (features, labels, blob id)."
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, k, 8, generator=g) * 10
    f = torch.cat([centres[c, j] + spread * torch.randn(per, 8, generator=g) for c in range(classes) for j in range(k)])
    labels = torch.arange(classes).repeat_interleave(k * per)
    blob = torch.arange(k).repeat_interleave(per).repeat(classes)
    return f, labels, blob

def test_coverage_is_one_for_one_per_mode_and_one_over_k_for_one_mode():
    f, y, blob = blobs()
    one_per_mode = torch.tensor([int(torch.nonzero((y == c) & (blob == j))[0]) for c in range(2) for j in range(5)])
    assert mode_coverage(f, y, f[one_per_mode], y[one_per_mode]) == {0: 1.0, 1: 1.0}
    same_mode = torch.tensor([int(i) for c in range(2) for i in torch.nonzero((y == c) & (blob == 0)).flatten()[:5]])
    assert mode_coverage(f, y, f[same_mode], y[same_mode]) == {0: 0.2, 1: 0.2}

def test_mode_discovery_only_hits_every_mode_and_random_usually_does_not():
    f, y, blob = blobs(k=8, per=10)
    md = select_closest_to_centroids(f, y, class_kmeans(f, y, 8, seed=0))
    assert sorted(blob[md[:8]].tolist()) == list(range(8))
    assert mode_coverage(f, y, f[md], y[md], seed=3)[0] == 1.0
    cov_random = [mode_coverage(f, y, f[r], y[r])[0] for r in (select_random_real(y, 8, s) for s in range(5))]
    assert sum(cov_random) / 5 < 1.0  # 8 draws from 8 equal modes rarely hit all (P = 8!/8^8 ≈ 0.002)

def test_herding_matches_the_class_mean_better_than_random():
    g = torch.Generator().manual_seed(1)
    f, y = torch.randn(400, 16, generator=g), torch.arange(4).repeat_interleave(100)
    h = select_herding(f, y, 10)
    err = lambda idx: sum(float((f[idx][y[idx] == c].mean(0) - f[y == c].mean(0)).norm()) for c in range(4))
    assert err(h) < min(err(select_random_real(y, 10, s)) for s in range(10))
    assert len(set(h.tolist())) == 40 and (y[h] == torch.arange(4).repeat_interleave(10)).all()

def test_diversity_and_representativeness_values():
    real = torch.tensor([[0., 0], [0, 2], [10, 10]]); rl = torch.zeros(3, dtype=torch.long)
    syn = torch.tensor([[0., 0], [3, 4]]); sl = torch.zeros(2, dtype=torch.long)
    rep = distillation_metrics(real, rl, syn, sl, feature_space='toy', n_nearest=2, tsne=False)
    assert rep.per_class[0]['diversity_raw'] == pytest.approx(5.0)
    assert rep.per_class[0]['representativeness_raw'] == pytest.approx((1.0 + (math.sqrt(13) + 5) / 2) / 2)
    dup = distillation_metrics(real, rl, torch.zeros(2, 2), sl, feature_space='toy', tsne=False)
    assert dup.per_class[0]['diversity_raw'] == 0.0
    one = distillation_metrics(real, rl, syn[:1], sl[:1], feature_space='toy', tsne=False)
    assert math.isnan(one.per_class[0]['diversity_raw']) and one.per_class[0]['coverage'] == 1.0

def test_tsne_report_and_figure():
    f, y, _ = blobs(k=3, per=15)
    idx = select_random_real(y, 3, seed=0)
    rep = distillation_metrics(f, y, f[idx], y[idx], feature_space='toy blobs', seed=0, tsne_iters=250)
    assert set(rep.mean) == {'diversity_raw', 'representativeness_raw', 'coverage', 'diversity_tsne', 'representativeness_tsne'}
    assert rep.tsne[0][0].shape == (45, 2) and rep.tsne[0][1].shape == (3, 2)
    fig = plot_tsne(rep, 'random real'); assert len(fig.axes) == 2

def test_bad_input():
    f, y, _ = blobs()
    with pytest.raises(ValueError, match='fewer than ipc=101'): select_random_real(y, 101)
    with pytest.raises(ValueError, match='8-d but distilled 3-d'): distillation_metrics(f, y, f[:2, :3], y[:2], feature_space='x')
    with pytest.raises(ValueError, match='no real samples'): select_closest_to_centroids(f, y, {7: torch.zeros(2, 8)})
    with pytest.raises(ValueError, match='distilled class 5'): mode_coverage(f, y, f[:1], torch.tensor([5]), k=2)


def test_streamed_metrics_equal_the_in_memory_ones_and_ask_for_one_class_at_a_time():
    from mgd3.metrics import streamed_metrics, class_metrics
    f, y, blob = blobs(k=4, per=15, classes=3)
    pick = torch.cat([torch.nonzero(y == c).flatten()[::15] for c in range(3)])   # one per blob
    ref = distillation_metrics(f, y, f[pick], y[pick], feature_space='x', tsne=False, seed=0)
    asked = []
    def real(c): asked.append(c); return f[y == c]
    rep = streamed_metrics(real, {'s': lambda c: f[pick[y[pick] == c]]}, range(3), feature_space='x', k=4)['s']
    assert asked == [0, 1, 2] and rep.mean == ref.mean and rep.per_class == ref.per_class
    assert rep.mean['coverage'] == 1.0
    m, xy = class_metrics(f[y == 0], f[pick[:4]], k=4, tsne=True, tsne_iters=250)
    assert xy[0].shape == (60, 2) and xy[1].shape == (4, 2) and 'diversity_tsne' in m

def test_tsne_only_on_the_first_classes_and_means_over_those():
    from mgd3.metrics import streamed_metrics
    f, y, _ = blobs(k=3, per=10, classes=3)
    reps = streamed_metrics(lambda c: f[y == c], {'a': lambda c: f[y == c][:3], 'b': lambda c: f[y == c][3:6]},
                            range(3), feature_space='x', k=3, tsne_sets=['a'], tsne_classes=2, tsne_iters=250)
    assert sorted(reps['a'].tsne) == [0, 1] and not reps['b'].tsne
    assert 'diversity_tsne' in reps['a'].per_class[1] and 'diversity_tsne' not in reps['a'].per_class[2]
    assert math.isfinite(reps['a'].mean['diversity_tsne']) and 'diversity_tsne' not in reps['b'].mean

def test_ddranking_scores_reproduce_a_worked_example_by_hand():
    """DD-Ranking's LRS and ARS (ddranking/metrics/hard_label.py, soft_label.py, aug_robust.py: `compute_metrics`)
    on the full-data accuracy their code caches, 56.5% for ResNet-18-BN on ImageNet-1K (REAL_DATA_ACC_CACHE in
    ddranking/utils/train_and_eval.py), λ = γ = 0.5 (their defaults). By hand:
    HLR = 56.5 − 20 = 36.5, IOR = 50 − 45 = 5, α = 0.5·0.05 − 0.5·0.365 = −0.1575,
    LRS = (e^−0.1575 − e^−1) / (e − e^−1) = (0.8542768 − 0.3678794) / 2.3504024 = 0.2069422;
    β = 0.5·(50 − 45)/100 + 0.5·(30 − 32)/100 = 0.015, ARS = (1.0151131 − 0.3678794) / 2.3504024 = 0.2753714."""
    from mgd3.metrics import label_robust_score, augmentation_robust_score
    lrs = label_robust_score(syn_hard=20.0, syn_any=50.0, random_any=45.0, full_hard=56.5)
    assert (lrs.hlr, lrs.ior) == (36.5, 5.0) and abs(lrs.alpha + 0.1575) < 1e-12
    assert abs(lrs.lrs - 20.69422) < 1e-4
    ars = augmentation_robust_score(syn_aug=50.0, random_aug=45.0, syn_no_aug=30.0, random_no_aug=32.0)
    assert abs(ars.beta - 0.015) < 1e-12 and abs(ars.ars - 27.53714) < 1e-4
    # the weight moves the score the way DD-Ranking's does: all on IOR, then all on −HLR
    assert abs(label_robust_score(20, 50, 45, 56.5, weight=1).lrs - 100 * (1.0512711 - 0.3678794) / 2.3504024) < 1e-4
    assert abs(label_robust_score(20, 50, 45, 56.5, weight=0).lrs - 100 * (0.6941967 - 0.3678794) / 2.3504024) < 1e-4
