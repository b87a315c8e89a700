"""Package build for mgd3; metadata and requirements come from settings.ini (nbdev 2 layout).

Extras: `sd` (Stable Diffusion text encoders), `explore` (the interactive explorer, in a notebook or served to a
browser by voila), `run` (papermill and a kernel for the parameterised run notebook), `export` (Hugging Face `datasets`,
to load an exported distilled set), `all` (the four), `dev` (all, plus the pinned nbdev tools, pytest, the build/upload
checkers and selenium for the browser test).

Why each floor in settings.ini (measured in throwaway Python 3.10 venvs at the floors, with NumPy 1.24 and 2.2):
  torch>=2.3, torchvision>=0.18  2.3 is the first torch built against NumPy 2 (older ones lose torch.from_numpy there)
  numpy>=1.24                    tested floor; NumPy 2 works given the torch/matplotlib/scikit-learn floors
  diffusers>=0.30                AutoencoderKL(mid_block_add_attention=) (make_vae, tiny-mnist); DiTTransformer2DModel
                                 came in 0.29. 0.35.0/0.35.1 fail to import on torch<2.4 (torch.library.custom_op)
  huggingface_hub>=0.23.2        snapshot_download(local_files_only=, allow_patterns=); diffusers 0.30's own floor
  safetensors>=0.4.1, tqdm>=4.60, pillow>=9, mlxtend>=0.22, timm>=0.9 (timm.data.ImageNetInfo)   tested floors
  accelerate>=0.20               PartialState.split_between_processes (absent in 0.19)
  filelock>=3.0.12               RunLock (one writer per run folder): FileLock.acquire(timeout=0), Timeout, and a killed
                                 holder's lock freed by the OS; two-process lock cases pass at 3.0.12
  scikit-learn>=1.5              TSNE(max_iter=) (n_iter before 1.5); joblib>=1.2 is scikit-learn 1.5's floor
  scipy>=1.6                     imported directly (cdist in metrics, linear_sum_assignment in candidates); scikit-learn
                                 1.5's own floor, so no install changes; not measured at 1.6 itself
  matplotlib>=3.8.4              first release for NumPy 2 (3.7 fails to import there; 3.8.0-3.8.3 cap numpy<2)
  sd: transformers>=5            tiny_text_backbone_folder builds CLIPTokenizer(vocab=, merges=), a transformers 5 API;
      diffusers>=0.35.2          older diffusers import FLAX_WEIGHTS_NAME, gone from transformers 5
      pillow>=9.1                transformers 5 uses PIL.Image.Resampling without declaring pillow
  explore/run: ipython>=8.3      execnb (nbdev_test) passes run_cell(cell_id=), new in IPython 8.3
      ipykernel>=6.21            older 6.x die at start (6.0) or hold jupyter_client<8 and IPython 7
  dev: diffusers>=0.41           tests compare with DiTPipeline(output_type='pt'), honoured from 0.41 (mgd3 needs 0.30)
      twine>=6.1                 twine 5.x rejects Metadata-Version 2.4 (License-Expression, License-File)
      hypothesis>=6.0            property tests (tests/test_properties.py): profiles, given, strategies; pass at 6.0.0
Not measured at the floor (chosen from the APIs used; tested with pyyaml 6.0, datasets 5.2, selenium 4.51):
  pyyaml>=5.1                    `mgd3 --config x.yaml` uses yaml.safe_load only; huggingface_hub's own floor
  export: datasets>=2.14         imagefolder with metadata.jsonl and `configs`/`data_files` in the card's YAML header
  dev: selenium>=4.6             Selenium Manager-era webdriver.Chrome(service=Service(path)) (tests/test_browser.py)
"""
import os, shlex
from configparser import ConfigParser
import setuptools
from packaging.version import Version
from setuptools.command.build_py import build_py

MIN_SETUPTOOLS = '77'   # SPDX `license` expressions and license_files (PEP 639); pyproject.toml asks for the same
if Version(setuptools.__version__) < Version(MIN_SETUPTOOLS):
    raise RuntimeError(f"mgd3 needs setuptools>={MIN_SETUPTOOLS} to build (found {setuptools.__version__}): "
                       "run `pip install -U setuptools`, or build with `python -m build` (isolated)")

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected: assert o in cfg, "missing expected setting: {}".format(o)
setup_cfg = {o: cfg[o] for o in cfg_keys}

licenses = {'apache2': 'Apache-2.0', 'mit': 'MIT'}   # nbdev's names -> SPDX expressions
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature',
            '7 - Inactive']
status = next(s for s in statuses if s.split()[0] == cfg['status'])   # settings.ini: status = 3 -> '3 - Alpha'
py_versions = '3.10 3.11 3.12 3.13'.split()

reqs = lambda key: shlex.split(cfg.get(key, ''))
requirements = reqs('requirements')
extras = {name: reqs(f'{name}_requirements') for name in ('sd', 'explore', 'run', 'export')}
extras['all'] = sorted({r for name in extras for r in extras[name]})
extras['dev'] = extras['all'] + reqs('dev_requirements')
min_python = cfg['min_python']


class BuildPyWithRunNotebook(build_py):
    "Also ship the parameterised notebooks `nbs/run.ipynb` and `nbs/sweep.ipynb` inside the package (`mgd3/`)."
    def run(self):
        super().run()
        for name in ('run.ipynb', 'sweep.ipynb'):
            src = os.path.join('nbs', name)
            if not self.editable_mode and os.path.isfile(src):   # an editable install uses the checkout's nbs/
                self.copy_file(src, os.path.join(self.build_lib, cfg['lib_path'], name), preserve_mode=False)


setuptools.setup(
    name=cfg['lib_name'],
    **setup_cfg,
    license_expression=licenses.get(cfg['license'].lower(), cfg['license']),
    license_files=['LICENSE'],
    classifiers=['Development Status :: ' + status,
                 'Intended Audience :: ' + cfg['audience'].title(),
                 'Natural Language :: ' + cfg['language'].title()] +
                ['Programming Language :: Python :: ' + o for o in py_versions[py_versions.index(min_python):]],
    url=cfg['git_url'],
    packages=setuptools.find_packages(include=['mgd3', 'mgd3.*']),
    include_package_data=False,   # package_data below is the whole list (MANIFEST.in only feeds the sdist)
    package_data={'mgd3': ['assets/**/*', 'assets/*']},
    install_requires=requirements,
    extras_require=extras,
    python_requires='>=' + min_python,
    long_description=open('README.md', encoding='utf-8').read(),
    long_description_content_type='text/markdown',
    zip_safe=False,
    cmdclass={'build_py': BuildPyWithRunNotebook},
    entry_points={'console_scripts': ['mgd3=mgd3.cli:main'],   # the command line (nbs/16_cli.ipynb)
                  'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d']},
)
