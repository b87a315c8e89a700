"""Behaviour of mgd3.core that needs processes or files: interrupted writes, seeding across processes, manifests."""
import errno, json, signal, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch
from mgd3.core import (atomic_save, atomic_write, item_generator, item_seed, save_tensors, load_tensors, Manifest,
                       save_json, load_json, pick_dtype)

def test_killed_atomic_write_leaves_no_file(tmp_path):
    target = tmp_path / 'big.bin'
    code = textwrap.dedent(f"""
        import time
        from mgd3.core import atomic_write
        with atomic_write({str(target)!r}) as f:
            f.write(b'x' * 1000); f.flush()
            print('writing', flush=True)
            time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'writing'
    p.send_signal(signal.SIGKILL); p.wait()
    assert not target.exists()

def test_killed_overwrite_keeps_old_content(tmp_path):
    target = tmp_path / 'm.json'
    save_json(target, {'v': 1})
    code = textwrap.dedent(f"""
        import time
        from mgd3.core import atomic_write
        with atomic_write({str(target)!r}, 'w') as f:
            f.write('{{"v": 2'); f.flush(); print('writing', flush=True); time.sleep(60)
    """)
    p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == 'writing'
    p.kill(); p.wait()
    assert load_json(target) == {'v': 1}

def test_item_seed_is_the_same_in_another_process():
    out = subprocess.run([sys.executable, '-c', 'from mgd3.core import item_seed; print(item_seed(2, 217, 9, "noise"))'],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert int(out) == item_seed(2, 217, 9, 'noise')

def test_item_noise_does_not_depend_on_batch_order():
    items = [(0, c, k) for c in range(3) for k in range(4)]
    ref = {it: torch.randn(2, 3, generator=item_generator(*it)) for it in items}
    for it in reversed(items):
        assert torch.equal(torch.randn(2, 3, generator=item_generator(*it)), ref[it])

def test_safetensors_roundtrip_dtypes(tmp_path):
    ts = {'f32': torch.randn(3, 4), 'bf16': torch.randn(5).bfloat16(), 'i64': torch.arange(7), 'u8': torch.ones(2, dtype=torch.uint8)}
    save_tensors(tmp_path / 'a.safetensors', ts, {'k': [1, 2]})
    back, meta = load_tensors(tmp_path / 'a.safetensors')
    assert meta == {'k': [1, 2]}
    for k, v in ts.items(): assert back[k].dtype == v.dtype and torch.equal(back[k], v)

def test_truncated_safetensors_is_a_clear_error(tmp_path):
    save_tensors(tmp_path / 'a.safetensors', {'x': torch.randn(100)})
    data = (tmp_path / 'a.safetensors').read_bytes()
    (tmp_path / 'a.safetensors').write_bytes(data[:len(data) // 2])
    with pytest.raises(ValueError, match='not a readable safetensors'):
        load_tensors(tmp_path / 'a.safetensors')

def test_manifest_stage_saves_even_on_error(tmp_path):
    m = Manifest(tmp_path / 'manifest.json', config={'ipc': 1})
    with pytest.raises(RuntimeError):
        with m.stage('sample'): raise RuntimeError('crash')
    d = json.loads((tmp_path / 'manifest.json').read_text())
    assert 'sample' in d['timings'] and d['status'] == 'running' and d['config'] == {'ipc': 1}
    assert d['versions']['torch'] and d['versions']['python']

def test_unwritable_folder_is_a_clear_error(tmp_path):
    (tmp_path / 'file').write_text('x')   # a regular file where a folder must go: unwritable even for root
    with pytest.raises(OSError, match='cannot create folder'):
        save_json(tmp_path / 'file' / 'x' / 'a.json', {})
    assert (tmp_path / 'file').read_text() == 'x'

def test_precision_choice():
    assert pick_dtype('bf16', 'cpu') == torch.bfloat16
    with pytest.raises(ValueError, match='fp16'): pick_dtype('fp16', 'cpu')

def _write_then_fill(tmp):   # fault injection: the disk fills up after part of the file is written
    Path(tmp).write_bytes(b'x')
    raise OSError(errno.ENOSPC, 'No space left on device')

def _via_atomic_write(path, fill):
    with atomic_write(path) as f:
        f.write(b'x')
        if fill: raise OSError(errno.ENOSPC, 'No space left on device')

def _via_atomic_save(path, fill):
    atomic_save(path, _write_then_fill if fill else (lambda tmp: Path(tmp).write_bytes(b'x')))

@pytest.mark.parametrize('write', [_via_atomic_write, _via_atomic_save], ids=['atomic_write', 'atomic_save'])
def test_disk_full_is_one_error_for_both_writers(tmp_path, write):
    write(tmp_path / 'old.bin', False)
    with pytest.raises(OSError) as info: write(tmp_path / 'a.bin', True)
    assert info.value.errno == errno.ENOSPC
    assert str(info.value) == (f"[Errno 28] cannot write {tmp_path / 'a.bin'}: No space left on device; free disk "
                               "space or choose a writable location, then rerun (files already written are kept)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ['old.bin']   # no file, no temporary file left behind

@pytest.mark.parametrize('write', [_via_atomic_write, _via_atomic_save], ids=['atomic_write', 'atomic_save'])
def test_uncreatable_folder_is_one_error_for_both_writers(tmp_path, write):
    (tmp_path / 'file').write_text('x')   # a regular file where a folder must go
    with pytest.raises(OSError) as info: write(tmp_path / 'file' / 'a.bin', False)
    assert info.value.errno is not None
    assert 'choose a writable location (or move the file in its way), then rerun' in str(info.value)
