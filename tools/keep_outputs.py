"""Execute notebooks in place and keep only the outputs worth reading in the documentation.

Notebooks that plot keep their (small) figures so the documentation shows them. Progress-bar widgets and stderr
are dropped (they mean nothing outside a live kernel), as are bare object reprs (`<function ...>`), the JPEG copy of
an image also kept as PNG, and any output over `--max-kb`. Cells marked `#| slow` are run (their outputs are what the
documentation shows of a run `nbdev_test` skips). Cells marked `#| eval: false` (training the embedded model, hub
downloads) are not run, as in `nbdev_test`.
Run it after editing a plotting notebook, then `nbdev_clean` (which keeps outputs):

    OMP_NUM_THREADS=1 python tools/keep_outputs.py nbs/13_distill.ipynb && nbdev_clean

`--executed` takes the outputs from a notebook already run (matched cell by cell: by id, else by source) instead of
running it again; `nbs/run.ipynb` keeps the default run's outputs this way (the run takes minutes):

    papermill nbs/run.ipynb /tmp/run_out.ipynb
    python tools/keep_outputs.py nbs/run.ipynb --executed /tmp/run_out.ipynb && nbdev_clean
"""
import argparse, json, re, subprocess, sys
from pathlib import Path

WIDGET = 'application/vnd.jupyter.widget-view+json'


def trim(output):
    "The output without its JPEG copy of an image that it also holds as PNG (IPython shows a PIL image as both)."
    data = output.get('data', {})
    if 'image/png' in data and 'image/jpeg' in data:
        output = {**output, 'data': {k: v for k, v in data.items() if k != 'image/jpeg'}}
    return output


def keep(output, max_kb):
    "Whether an executed cell's output stays in the notebook."
    if output['output_type'] == 'stream':
        return output.get('name') == 'stdout'
    data = output.get('data', {})
    if WIDGET in data:
        return False
    if set(data) == {'text/plain'} and ''.join(data['text/plain']).startswith('<'):
        return False   # an object's default repr (e.g. a registered function returned by its decorator)
    return len(json.dumps(output)) <= max_kb * 1024


def execute(nb, nb_path, skip):
    "Run `nb` (cells in `skip` replaced by `pass`) beside `nb_path` and return the executed notebook."
    run_nb = json.loads(json.dumps(nb))
    for cell, s in zip(run_nb['cells'], skip):
        if s: cell['source'] = ['pass  # eval: false']
    run_path = nb_path.with_name(f'.keep_outputs_{nb_path.name}')   # beside it: relative paths still work
    run_path.write_text(json.dumps(run_nb))
    try:
        subprocess.run([sys.executable, '-m', 'jupyter', 'nbconvert', '--to', 'notebook', '--execute',
                        '--inplace', '--ExecutePreprocessor.timeout=1800', str(run_path)], check=True)
        return json.loads(run_path.read_text())
    finally:
        run_path.unlink(missing_ok=True)


def matched(nb, ran):
    "The executed cell of each cell of `nb`: same id, else same source (papermill may inject a parameters cell)."
    by_id = {c.get('id'): c for c in ran['cells'] if c.get('id')}
    by_src = {''.join(c['source']): c for c in ran['cells']}
    out = []
    for cell in nb['cells']:
        done = by_id.get(cell.get('id')) or by_src.get(''.join(cell['source']))
        if done is None or ''.join(done['source']) != ''.join(cell['source']):
            raise SystemExit(f"the executed notebook has no cell like {''.join(cell['source'])[:60]!r}: rerun it")
        out.append(done)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('notebooks', nargs='+', type=Path)
    ap.add_argument('--max-kb', type=int, default=120, help='drop any single output larger than this')
    ap.add_argument('--executed', type=Path, help='take the outputs from this executed copy (one notebook only)')
    args = ap.parse_args()
    if args.executed and len(args.notebooks) != 1: ap.error('--executed takes one notebook')
    for nb_path in args.notebooks:
        nb = json.loads(nb_path.read_text())
        skip = [c['cell_type'] == 'code' and re.search(r'^#\|\s*eval:\s*false', ''.join(c['source']), re.M)
                for c in nb['cells']]
        if args.executed: ran = matched(nb, json.loads(args.executed.read_text()))
        else: ran = execute(nb, nb_path, skip)['cells']   # cell by cell, as written (eval: false cells as `pass`)
        nb['metadata'].pop('widgets', None)   # the saved state of the progress bars
        dropped = 0
        for cell, done, s in zip(nb['cells'], ran, skip):
            if cell['cell_type'] != 'code':
                continue
            outputs = [] if s else done.get('outputs', [])
            cell['outputs'] = [o for o in map(trim, outputs) if keep(o, args.max_kb)]
            dropped += len(outputs) - len(cell['outputs'])
        nb_path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
        figs = sum('image/png' in o.get('data', {}) for c in nb['cells'] for o in c.get('outputs', []))
        print(f'{nb_path}: {figs} figures kept, {dropped} outputs dropped, {nb_path.stat().st_size // 1024} KB')


if __name__ == '__main__':
    main()
