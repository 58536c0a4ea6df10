"""The pins agree everywhere a user may install from."""

import re
import tomllib

from conftest import REPO


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    specs = project["project"]["dependencies"] + [s for extra in project["project"]["optional-dependencies"].values()
                                                   for s in extra]
    pins = dict(re.match(r"^([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)$", s).groups() for s in specs)
    pins |= {name: version for name, version in project["tool"]["mnist-hpc"]["pins"].items()}
    return pins


def test_environment_yml_pins_equal_pyproject():
    env = (REPO / "environment.yml").read_text()
    pins = pyproject_pins()
    conda_pins = dict(re.findall(r"^\s+- ([A-Za-z0-9_.-]+)(?:\[[^\]]*\])?==(\S+)$", env, re.M))
    assert conda_pins, "no pinned pip packages found in environment.yml"
    for name, version in conda_pins.items():
        assert pins.get(name) == version, f"environment.yml pins {name}=={version}, pyproject.toml {pins.get(name)}"
    assert f"python={pins['python']}" in env
    assert f"horovod=={pins['horovod']}" in env
    assert pins["tensorflow-cpu"] == pins["tensorflow"]


def test_setup_script_pins_equal_pyproject():
    script = (REPO / "scripts" / "setup.sh").read_text()
    pins = pyproject_pins()
    assert f"TF_VERSION={pins['tensorflow']}" in script
    assert f"HOROVOD_VERSION={pins['horovod']}" in script
    assert f"numpy=={pins['numpy']}" in script and f"mpi4py=={pins['mpi4py']}" in script


def test_installed_versions_are_the_pinned_ones():
    from importlib.metadata import version

    import horovod
    import tensorflow as tf

    pins = pyproject_pins()
    assert tf.__version__ == pins["tensorflow"] and horovod.__version__ == pins["horovod"]
    assert version("keras").startswith("2.") and tf.keras.__name__.startswith("keras.api._v2")  # Keras 2, not 3
    for name in ("numpy", "mpi4py", "submitit"):
        assert version(name) == pins[name], name
