"""The package surface: explicit __all__, cheap torch-free import, install hints for extras."""

from __future__ import annotations

import model_agnostic
from tests.conftest import ROOT, run_without_torch


def test_all_lists_every_public_name_and_each_resolves() -> None:
    public = {name for name in dir(model_agnostic) if not name.startswith("_")}
    assert set(model_agnostic.__all__) - {"__version__"} == public - {"__version__"}
    for name in model_agnostic.__all__:
        assert getattr(model_agnostic, name) is not None


def test_importing_the_package_loads_neither_torch_nor_onnxruntime() -> None:
    code = (
        "import model_agnostic, model_agnostic.transforms, model_agnostic.adapters\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'onnx', 'tensorflow') if sys.modules.get(m)]\n"
        "assert not heavy, heavy\n"
    )
    done = run_without_torch(code, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_pytorch_backend_without_torch_names_the_extra_to_install() -> None:
    code = (
        "from model_agnostic import MissingDependencyError, Model\n"
        "class Net(Model):\n"
        "    def create_model(self): ...\n"
        "try:\n"
        "    Net.with_backend('pytorch')()\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    done = run_without_torch(code, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "pip install 'model-agnostic[torch]'" in done.stdout


def test_export_without_torch_names_the_extra_to_install() -> None:
    code = (
        "import numpy as np\n"
        "from model_agnostic import MissingDependencyError, OnnxModel, export_onnx\n"
        "try:\n"
        "    export_onnx(object(), 'x.onnx', None)\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    done = run_without_torch(code, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "Exporting to ONNX needs the 'torch' package" in done.stdout


def test_serving_and_adapters_import_no_web_framework_or_server() -> None:
    code = (
        "import model_agnostic.serving, model_agnostic.adapters.flask_app\n"
        "import model_agnostic.adapters.django_views\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'tensorflow', 'flask', 'django', 'waitress',\n"
        "                     'prometheus_client', 'grpc', 'google.protobuf') if sys.modules.get(m)]\n"
        "assert not heavy, heavy\n"
    )
    done = run_without_torch(code, cwd=ROOT)
    assert done.returncode == 0, done.stderr


def test_server_without_waitress_names_the_serve_extra() -> None:
    code = (
        "sys.modules['waitress'] = None\n"
        "from model_agnostic import MissingDependencyError\n"
        "from model_agnostic.serving import BackgroundServer, DataPlane, ModelRepository\n"
        "try:\n"
        "    BackgroundServer(DataPlane(ModelRepository())).start()\n"
        "except MissingDependencyError as exc:\n"
        "    print(exc)\n"
    )
    done = run_without_torch(code, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "pip install 'model-agnostic[serve]'" in done.stdout


def test_every_error_also_derives_from_a_builtin() -> None:
    import builtins

    from model_agnostic import errors

    builtin_errors = {v for v in vars(builtins).values()
                      if isinstance(v, type) and issubclass(v, BaseException)} - {Exception}
    plain = [name for name in errors.__all__
             if name != "ModelAgnosticError"
             and not any(issubclass(getattr(errors, name), b) for b in builtin_errors)]
    assert plain == []


def test_every_subpackage_is_listed_in_setup_cfg() -> None:
    """setup.cfg lists packages explicitly: one left out is missing from the wheel (the
    Dockerfile installs the wheel), though an editable install hides it."""
    import configparser

    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    listed = set(config["options"]["packages"].split())
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "model_agnostic").rglob("__init__.py")
    }
    assert found - listed == set()
