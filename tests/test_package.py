"""The package imports, picks backends by device, and ships its Triton kernels in a wheel."""
import os
import subprocess
import sysconfig
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy
import pytest
import torch

import seqkern
from seqkern import _backend

ROOT = Path(__file__).resolve().parent.parent


def test_backend_by_device(monkeypatch):
    monkeypatch.delenv("SEQKERN_BACKEND", raising=False)
    assert seqkern.backend_for(torch.device("cpu")) == "cpp"
    assert seqkern.backend_for(torch.device("cuda")) == "triton"


def test_backend_override_and_errors(monkeypatch):
    monkeypatch.setenv("SEQKERN_BACKEND", "reference")
    assert seqkern.backend_for(torch.device("cpu")) == "reference"
    monkeypatch.setenv("SEQKERN_BACKEND", "cpp")
    with pytest.raises(seqkern.BackendUnavailableError, match="CPU tensors only"):
        seqkern.backend_for(torch.device("cuda"))
    monkeypatch.setenv("SEQKERN_BACKEND", "fortran")
    with pytest.raises(seqkern.BackendUnavailableError, match="not a backend"):
        seqkern.backend_for(torch.device("cpu"))
    monkeypatch.setenv("SEQKERN_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(seqkern.BackendUnavailableError, match="TRITON_INTERPRET=1"):
        seqkern.backend_for(torch.device("cpu"))


def test_missing_backend_function_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("SEQKERN_BACKEND", "reference")
    with pytest.raises(seqkern.BackendUnavailableError, match="does not implement"):
        _backend.implementation("recurrent", "no_such_function", torch.device("cpu"))


def test_import_without_extension_and_triton(tmp_path):
    """`import seqkern` works when neither seqkern._C nor triton can be imported."""
    script = textwrap.dedent(
        """
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name == "triton" or name.startswith("triton.") or name == "seqkern._C":
                    raise ImportError("blocked for the test: " + name)
                return None
        sys.meta_path.insert(0, Block())
        import torch, seqkern
        from seqkern import _backend
        try:
            _backend.implementation("recurrent", "recurrent_layer_forward", torch.device("cpu"))
        except seqkern.BackendUnavailableError as error:
            assert "pip install" in str(error), error
        else:
            raise SystemExit("expected BackendUnavailableError")
        try:
            seqkern.nn.LSTM(3, 4)(torch.zeros(2, 1, 3))
        except seqkern.BackendUnavailableError as error:
            assert "pip install" in str(error), error
        else:
            raise SystemExit("expected BackendUnavailableError from a layer")
        print("ok")
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "SEQKERN_BACKEND"}
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


@pytest.mark.slow
def test_wheel_ships_kernels_and_imports(tmp_path):
    """Build a wheel (C++ included), install it into a fresh venv that sees this
    environment's torch, and import seqkern.kernels from there, not from the checkout."""
    wheel_dir = tmp_path / "wheels"
    env = dict(os.environ, SEQKERN_PORTABLE="1")
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-w", str(wheel_dir), str(ROOT)],
        capture_output=True, text=True, env=env, timeout=1200,
    )
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    wheel = next(wheel_dir.glob("seqkern-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "seqkern/kernels/__init__.py" in names
    assert any(n.startswith("seqkern/_C") and n.endswith(".so") for n in names)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # The fresh venv sees this environment's packages (torch, numpy) through a path entry;
    # .pth files there (this checkout's editable install) are not processed.
    venv_site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip()
    host_dirs = {sysconfig.get_paths()["purelib"]}
    host_dirs |= {str(Path(module.__file__).resolve().parent.parent) for module in (torch, numpy)}
    Path(venv_site, "_host_packages.pth").write_text("\n".join(sorted(host_dirs)) + "\n")
    install = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", str(wheel)],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    probe = ("import seqkern, seqkern.kernels, seqkern._C; "
             "import os; print(os.path.dirname(seqkern.kernels.__file__))")
    run = subprocess.run([str(python), "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert str(venv) in run.stdout, run.stdout
