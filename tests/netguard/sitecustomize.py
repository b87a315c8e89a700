"""Python imports this module at start-up when this folder is on PYTHONPATH: the tests' subprocesses (papermill
kernels, torchrun workers, fault-injection children) and `nbdev_test` in CI run under the same network guard as
pytest itself (see netguard.py)."""
import netguard
netguard.install()
