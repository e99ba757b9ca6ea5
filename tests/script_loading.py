"""Import run_mlm_ldro.py, which lives at the repository root and is not a package module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

RUN_MLM_SCRIPT = Path(__file__).resolve().parents[1] / "run_mlm_ldro.py"


def load_run_mlm_script() -> ModuleType:
    """Return the run_mlm_ldro module, executing the script once per test session."""
    name = "run_mlm_ldro"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, RUN_MLM_SCRIPT)
    module = importlib.util.module_from_spec(spec)

    # dataclasses look their module up in sys.modules while the script is being executed.
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
