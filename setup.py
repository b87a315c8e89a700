"""Package build for mgd3; metadata and requirements come from settings.ini (nbdev 2 layout).

Extras: `sd` (Stable Diffusion text encoders), `explore` (the interactive explorer, in a notebook or served to a
browser by voila), `run` (papermill and a kernel for the parameterised run notebook), `all` (the three), `dev` (all,
plus the pinned nbdev tools, pytest and the build/upload checkers)."""
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
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
status = next(s for s in statuses if s.split()[0] == cfg['status'])   # settings.ini: status = 3 -> '3 - Alpha'
py_versions = '3.10 3.11 3.12 3.13'.split()

reqs = lambda key: shlex.split(cfg.get(key, ''))
requirements = reqs('requirements')
extras = {name: reqs(f'{name}_requirements') for name in ('sd', 'explore', 'run')}
extras['all'] = sorted({r for name in ('sd', 'explore', 'run') for r in extras[name]})
extras['dev'] = extras['all'] + reqs('dev_requirements')
min_python = cfg['min_python']


class BuildPyWithRunNotebook(build_py):
    "Also ship the parameterised run notebook `nbs/run.ipynb` as `mgd3/run.ipynb`, so an installed mgd3 can run it."
    def run(self):
        super().run()
        src = os.path.join('nbs', 'run.ipynb')
        if not self.editable_mode and os.path.isfile(src):   # an editable install uses the checkout's nbs/run.ipynb
            self.copy_file(src, os.path.join(self.build_lib, cfg['lib_path'], 'run.ipynb'), preserve_mode=False)


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
    entry_points={'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d']},
)
