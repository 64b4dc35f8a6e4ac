import importlib

import mmaqd


def test_version():
    assert isinstance(mmaqd.__version__, str) and mmaqd.__version__.count('.') == 2


def test_lower_layers_do_not_import_mmdet():
    """mmaqd.ops and mmaqd.quantization must work on a machine with torch (and mmengine) only."""
    import subprocess
    import sys
    code = ('import sys; sys.modules["mmdet"] = None\n'  # any mmdet import now raises ImportError
            'import mmaqd.ops, mmaqd.quantization\n'
            'print("ok")')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert importlib.util.find_spec('mmdet') is not None
