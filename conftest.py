"""Root pytest configuration: doctests of the package and README."""
import importlib.util

collect_ignore_glob = []
if importlib.util.find_spec("numba.cuda") is None:
    collect_ignore_glob.append("fastconv/cuda/*")
