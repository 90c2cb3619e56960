"""The GPU check (see `dit_accel/bench/shapes/gpu.py`): `python benchmarks/gpu_check.py [--smoke] [--json PATH]`."""
import sys
from pathlib import Path

if __name__ == "__main__":
    try:
        from dit_accel.bench.shapes.gpu import main
    except ImportError:  # run from a checkout that is not installed: the repository root is the package
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from dit_accel.bench.shapes.gpu import main
    raise SystemExit(main())
