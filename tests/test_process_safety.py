"""Import-order safety: one process that exports CoreML and then TFLite, and one that
does the reverse, must both finish (TensorFlow before torch's triton segfaults;
coremltools imports TensorFlow; LiteRT runs in the same process)."""
import subprocess
import sys
import textwrap

import pytest

from evit_export.core.optional import is_available

SCRIPT = textwrap.dedent("""
    import sys
    from pathlib import Path
    import numpy as np

    from evit_export.models.reference import deploy_for_export
    from evit_export.core.preprocess import seeded_pixels
    from evit_export.targets import RunnerOptions, get_target
    from evit_export.targets.torch_runner import TorchRunner

    order, out = sys.argv[1].split(","), Path(sys.argv[2])
    deployed, spec = deploy_for_export("m0", img_size=64, seed=0)
    pixels = seeded_pixels(2, 64, 0)
    ref = TorchRunner(deployed, spec).run(pixels)
    for name in order:
        target = get_target(name)
        path = out / ("m0.tflite" if name == "tflite" else "m0.mlpackage")
        art = target.export(deployed, spec, path)
        assert target.read_spec(path).variant == "m0"
        if name == "tflite":
            with target.open(path, options=RunnerOptions(threads=1)) as runner:
                got = runner.run(pixels)
            assert np.abs(got - ref).max() < 1e-3, np.abs(got - ref).max()
            if order[0] == "tflite":  # the conversion ran in a worker: no TensorFlow here
                assert "tensorflow" not in sys.modules, "tensorflow imported by the TFLite export"
        print("exported", name, "tensorflow loaded:", "tensorflow" in sys.modules, flush=True)
    print("OK")
""")


def _missing_runtimes() -> list[str]:
    return [module for module in ("coremltools", "tensorflow", "ai_edge_litert") if not is_available(module)]


@pytest.mark.skipif(bool(_missing_runtimes()), reason="needs the [coreml] and [tflite] extras: "
                    f"{', '.join(_missing_runtimes())} not installed")
# The reverse order is opt-in (28 s): either order imports both converters in one process.
@pytest.mark.parametrize("order", ["coreml,tflite", pytest.param("tflite,coreml", marks=pytest.mark.slow)])
def test_one_process_exports_coreml_and_tflite(order, tmp_path):
    proc = subprocess.run([sys.executable, "-c", SCRIPT, order, str(tmp_path)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip().endswith("OK"), proc.stdout
    assert (tmp_path / "m0.tflite").exists()
    assert (tmp_path / "m0.mlpackage").exists()
