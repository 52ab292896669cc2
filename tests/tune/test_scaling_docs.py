"""README.md ("Scaling out") and examples/: the cluster file is valid for `ray up`, and every command they show
parses."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray
import yaml

from tests.conftest import ROOT

DOC = ROOT / "README.md"
EXAMPLES = ROOT / "examples"


def test_cluster_yaml_is_a_valid_ray_up_config():
    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    config = yaml.safe_load((EXAMPLES / "cluster.yaml").read_text())
    jsonschema.validate(config, schema)
    assert config["head_node_type"] in config["available_node_types"]


def test_rayjob_runs_the_search_then_the_multi_gpu_retrain_on_a_shared_volume():
    job, claim = yaml.safe_load_all((EXAMPLES / "rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    pods = [job["spec"]["rayClusterSpec"]["headGroupSpec"]] + job["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    for group in pods:
        mounts = group["template"]["spec"]["containers"][0]["volumeMounts"]
        assert {"name": "shared", "mountPath": "/shared"} in mounts
    commands = job["spec"]["entrypoint"].split("&&")
    assert [c.split()[2] for c in commands] == ["tune.search", "tune.retrain"]


def shown_commands() -> list[str]:
    """Every `python -m tune.search|tune.retrain ...` / `python train_convlstm.py ...` line in the doc and examples."""
    texts = [DOC.read_text(), (EXAMPLES / "cluster.yaml").read_text(), (EXAMPLES / "rayjob.yaml").read_text()]
    text = "\n".join(texts).replace("\\\n", " ").replace("#     ", "")
    found = re.findall(r"python (?:-m (?:tune\.search|tune\.retrain)|train_convlstm\.py)[^\n`&#]*", text)
    job = yaml.safe_load_all((EXAMPLES / "rayjob.yaml").read_text())
    found += [c.strip() for c in next(job)["spec"]["entrypoint"].split("&&")]
    return sorted({c.strip() for c in found if len(c.split()) > 3})  # not the bare names the prose mentions


@pytest.mark.parametrize("command", shown_commands())
def test_every_command_shown_parses(command):
    from model.train import parser as train_parser
    from tune.retrain import parser as retrain_parser
    from tune.search import parser as search_parser

    argv = shlex.split(command.replace("<name>", "x"))
    tool = argv[2] if argv[1] == "-m" else argv[1]
    args = argv[3:] if argv[1] == "-m" else argv[2:]
    make = {"tune.search": search_parser, "tune.retrain": retrain_parser, "train_convlstm.py": train_parser}[tool]
    make().parse_args(args)  # an unknown flag exits 2
