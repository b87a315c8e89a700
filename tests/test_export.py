"""Exported distilled sets: Hugging Face `datasets` and torchvision load the folder, `load_distilled` reads the folder
and the tensor pack back with their metadata, and the three agree image by image with the run's own files."""
import json, shutil
from pathlib import Path
import numpy as np
import pytest, torch
from PIL import Image
import mgd3
from mgd3.export import CARD_FILE, METADATA_FILE, PACK_FILE, PROVENANCE_FILE, DISTILLED_FORMAT

@pytest.fixture(scope='module')
def run_dir(tiny_mnist_pipeline, tmp_path_factory):
    out = tmp_path_factory.mktemp('export-run') / 'run'
    mgd3.distill(backbone=str(tiny_mnist_pipeline), out_dir=str(out), ipc=2, seeds=[0], num_inference_steps=4,
                 stop_t=2, epochs=1, quick=True, methods=['mode_discovery_only', 'mgd3'])
    return out

@pytest.fixture(scope='module')
def exported(run_dir, tmp_path_factory):
    return mgd3.export_distilled(run_dir, 'mgd3', 0, tmp_path_factory.mktemp('export') / 'mnist5k-mgd3')

def _pixels(path):
    with Image.open(path) as im: return np.asarray(im.convert('L'))

def test_the_folder_is_self_describing(exported, run_dir):
    names = {p.name for p in exported.iterdir() if p.is_file()}
    assert names == {CARD_FILE, METADATA_FILE, PACK_FILE, PROVENANCE_FILE}
    rows = [json.loads(l) for l in (exported / METADATA_FILE).read_text().splitlines()]
    assert len(rows) == 20 and [r['label'] for r in rows] == [c for c in range(10) for _ in range(2)]
    assert {'file_name', 'label', 'class_name', 'mode', 'generation_seed'} <= set(rows[0])
    assert rows[5] | {'sha256': None, 'noise_seed': None} == {
        'file_name': '2/1.png', 'label': 2, 'class_name': '2', 'class_folder': '2', 'index': 1, 'mode': 1,
        'generation_seed': 0, 'noise_seed': None, 'source_row': None, 'sha256': None}
    man = json.loads((run_dir / 'manifest.json').read_text())
    for r in rows:   # byte for byte the run's images, whose hashes the run recorded
        assert (exported / r['file_name']).read_bytes() == (run_dir / 'images/mgd3/seed0' / r['file_name']).read_bytes()
        assert man['images'][f"images/mgd3/seed0/{r['file_name']}"] == r['sha256']
    card = (exported / CARD_FILE).read_text()
    ev = json.loads((run_dir / 'eval/mgd3/seed0/convnet3.json').read_text())
    assert f"| convnet3 | 0 | {ev['best_acc']:.2f} | {ev['final_acc']:.2f} | 1 | hard | quick |" in card
    assert '| mode_guidance_scale | 0.1 |' in card and '| torch | ' + torch.__version__.split('+')[0] in card
    assert '@inproceedings{chansantiago2025mgd3' in card and 'task_categories:\n- image-classification' in card
    info = json.loads((exported / PROVENANCE_FILE).read_text())
    assert info['format'] == DISTILLED_FORMAT and info['config'] == man['config'] and info['seeds'] == man['seeds']

def test_torchvision_and_hugging_face_load_it(exported, tmp_path):
    import datasets
    from torchvision.datasets import ImageFolder
    tv = ImageFolder(str(exported))
    assert tv.classes == [str(c) for c in range(10)] and len(tv) == 20
    ds = datasets.load_dataset('imagefolder', data_dir=str(exported), cache_dir=str(tmp_path / 'hf'))['train']
    assert len(ds) == 20 and {'image', 'label', 'class_name', 'mode', 'generation_seed'} <= set(ds.column_names)
    by_file = {Path(p).relative_to(exported).as_posix(): y for p, y in tv.samples}
    rows = {json.loads(l)['sha256']: json.loads(l) for l in (exported / METADATA_FILE).read_text().splitlines()}
    for ex in ds:   # every HF example: the same pixels and label as the file torchvision reads
        arr = np.asarray(ex['image'].convert('L'))
        match = [r for r in rows.values() if np.array_equal(_pixels(exported / r['file_name']), arr)
                 and r['label'] == ex['label'] and r['mode'] == ex['mode']]
        assert match and by_file[match[0]['file_name']] == ex['label']
    # as the hub loads a dataset repository: the card's `configs` name the data files
    hub = datasets.load_dataset(str(exported), cache_dir=str(tmp_path / 'hf2'))['train']
    assert len(hub) == 20 and sorted(hub['label']) == sorted(ds['label'])

def test_load_distilled_reads_folder_and_pack_alike(exported, run_dir):
    a, b = mgd3.load_distilled(exported), mgd3.load_distilled(exported / PACK_FILE)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert a.rows == b.rows and a.info == b.info and torch.equal(a.soft_labels, b.soft_labels)
    assert a.images.dtype == torch.uint8 and a.images.shape == (20, 1, 32, 32)
    for img, r in zip(a.images, a.rows):
        assert np.array_equal(img[0].numpy(), _pixels(run_dir / 'images/mgd3/seed0' / r['file_name']))
    teacher = mgd3.load_teacher('mnist5k', device='cpu')
    with torch.no_grad(): want = teacher(a.images.float() / 255)
    torch.testing.assert_close(a.soft_labels, want)
    assert a.info['soft_labels']['teacher'] == 'mnist5k' and a.info['soft_labels']['kind'] == 'logits'
    s = a.image_set()
    assert s.classes == [str(c) for c in range(10)] and torch.equal(s.labels, a.labels)

def test_a_changed_image_is_caught(exported, run_dir, tmp_path):
    copy = tmp_path / 'copy'
    shutil.copytree(exported, copy)
    (copy / '3' / '0.png').write_bytes((copy / '4' / '0.png').read_bytes())
    with pytest.raises(ValueError, match=r"1 images differ from their sha256 .* \(e\.g\. 3/0\.png\)"):
        mgd3.load_distilled(copy)
    run = tmp_path / 'run'
    shutil.copytree(run_dir, run)
    (run / 'images/mgd3/seed0/3/0.png').write_bytes((run / 'images/mgd3/seed0/4/0.png').read_bytes())
    with pytest.raises(ValueError, match='changed after the run recorded it'):
        mgd3.export_distilled(run, 'mgd3', 0, tmp_path / 'out')
    assert not (tmp_path / 'out').exists() and not (tmp_path / 'out.partial').exists()

def test_a_seedless_real_set_without_pack(run_dir, tmp_path):
    out = mgd3.export_distilled(run_dir, 'mode_discovery_only', dest=tmp_path / 'mdo', pack=False)
    s = mgd3.load_distilled(out)
    done = json.loads((run_dir / 'images/mode_discovery_only/done.json').read_text())
    assert [r['source_row'] for r in s.rows] == done['rows'] and s.soft_labels is None
    assert {r['generation_seed'] for r in s.rows} == {None} and s.info['generation_seed'] is None
    assert not (out / PACK_FILE).exists()

def test_push_to_hub_refuses_offline(exported):
    # the upload itself is untested: the tests run without network (HF_HUB_OFFLINE=1 where the suite runs)
    import huggingface_hub.constants as hc
    old, hc.HF_HUB_OFFLINE = hc.HF_HUB_OFFLINE, True
    try:
        with pytest.raises(ValueError, match='hub is offline'): mgd3.push_to_hub(exported, 'someone/mnist5k-mgd3')
    finally: hc.HF_HUB_OFFLINE = old

def _flip(path, at=-100):
    b = bytearray(Path(path).read_bytes()); b[at] ^= 0x01; Path(path).write_bytes(bytes(b))

def test_mgd3_verify_checks_runs_exports_and_packs(run_dir, exported, tmp_path, capsys):
    "`mgd3 verify PATH` exits 0 on a whole run, export and pack, and 1 naming the file after one flipped byte in each."
    from mgd3.cli import main
    for p in (run_dir, exported, exported / PACK_FILE):
        assert main(['verify', str(p)]) == 0, capsys.readouterr().out
    run, exp = tmp_path / 'run', tmp_path / 'exp'
    shutil.copytree(run_dir, run); shutil.copytree(exported, exp)
    capsys.readouterr()
    _flip(run / 'images/mgd3/seed0/3/1.png')
    assert main(['verify', str(run)]) == 1
    assert 'images/mgd3/seed0/3/1.png does not match the sha256' in capsys.readouterr().out
    _flip(exp / '4/0.png')
    assert main(['verify', str(exp)]) == 1 and '4/0.png does not match its sha256' in capsys.readouterr().out
    _flip(exp / PACK_FILE)
    assert main(['verify', str(exp / PACK_FILE)]) == 1
    assert "tensor 'images' differs from the sha256 in its header" in capsys.readouterr().out
    (tmp_path / 'other').mkdir()
    assert main(['verify', str(tmp_path / 'other')]) == 1
    assert mgd3.verify(exp).checked == 20 + 3   # 20 images, and the pack's 3 tensors (images, labels, soft labels)
