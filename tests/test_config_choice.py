"""The one "allowed values" validator of the configuration schemas (hybrid.config.validate.choice)
and its use by every schema: one line naming ``[section] key``, the allowed values (as written in
TOML) and the value given; a boolean is not the integer 1, 2.0 not the integer 2."""

import copy
import re
import tomllib
from pathlib import Path

import pytest

from hybrid.config import ConfigError, forward_config_from_dict, maps_config_from_dict
from hybrid.config.invert import invert_config_from_dict
from hybrid.config.transport import transport_config_from_dict
from hybrid.config.validate import choice

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize("allowed", [("float32", "float64"), ("residuals", "all", "none"), (1, 2, 3),
                                     (True, False), {1: "backward Euler", 2: "BDF2"}])
def test_each_allowed_value_is_accepted_and_returned(allowed):
    for value in allowed:
        got = choice("section", "key", value, allowed)
        assert got == value and type(got) is type(value)


@pytest.mark.parametrize("value, allowed, message", [
    ("float16", ("float32", "float64"), "[training] dtype must be \"float32\" or \"float64\", got 'float16'"),
    ("NONE", ("residuals", "all", "none"),
     "[training] dtype must be one of \"residuals\", \"all\", \"none\", got 'NONE'"),
    (True, (1, 2, 3), "[training] dtype must be one of 1, 2, 3, got True (a boolean, not an integer)"),
    (False, (0, 1), "[training] dtype must be 0 or 1, got False (a boolean, not an integer)"),
    (2.0, (1, 2, 3), "[training] dtype must be one of 1, 2, 3, got 2.0 (a float, not an integer)"),
    ("2", (1, 2, 3), "[training] dtype must be one of 1, 2, 3, got '2'"),
    (4, (1, 2, 3), "[training] dtype must be one of 1, 2, 3, got 4"),
    (1, (True, False), "[training] dtype must be true or false, got 1 (an integer, not a boolean)"),
    ("true", (True, False), "[training] dtype must be true or false, got 'true'"),
    (3, {1: "backward Euler", 2: "BDF2"}, "[training] dtype must be 1 (backward Euler) or 2 (BDF2), got 3"),
    (["cpu"], ("cpu", "cuda"), "[training] dtype must be \"cpu\" or \"cuda\", got ['cpu']"),
    (None, ("parker",), "[training] dtype must be one of \"parker\", got None"),
])
def test_other_values_are_refused_in_one_line(value, allowed, message):
    with pytest.raises(ConfigError) as error:
        choice("training", "dtype", value, allowed)
    assert str(error.value) == message


def _example(name: str) -> dict:
    return tomllib.loads((EXAMPLES / name).read_text())


FORWARD = {"geometry": {"shape": "sphere", "mesh_size": 1.5e-4}, "output": {"directory": "out"}}
MAPS = {"dce": {"series": "dce.nii.gz", "r1_per_mM_s": 4.0, "n_baseline": 12, "tr_s": 5e-3,
                "flip_angle_deg": 20.0, "aif": "preclinical", "t10_s": 1.5},
        "cest": {"series": "cest.nii.gz", "calibration_ph": [6.5, 7.0], "calibration_ratio": [0.1, 0.3]},
        "output": {"directory": "maps"}}
LOADERS = {"forward": (lambda: FORWARD, lambda d: forward_config_from_dict(d, "f.toml")),
           "maps": (lambda: MAPS, lambda d: maps_config_from_dict(d, origin="m.toml")),
           "invert": (lambda: _example("invert_disc.toml"), lambda d: invert_config_from_dict(d, "i.toml", EXAMPLES)),
           "transport": (lambda: _example("transport_krogh.toml"),
                         lambda d: transport_config_from_dict(d, "t.toml", EXAMPLES))}


@pytest.mark.parametrize("schema", LOADERS)
def test_the_documents_edited_below_load(schema):
    document, load = LOADERS[schema]
    load(copy.deepcopy(document()))


@pytest.mark.parametrize("schema, section, key, value, allowed", [
    ("forward", "geometry", "shape", "cube", '"sphere", "disc", "slab", "krogh", "vessels", "mask"'),
    ("forward", "geometry", "partitioner", "metis", '"scotch", "kahip", "parmetis"'),
    ("forward", "solver", "degree", True, "one of 1, 2, 3"),
    ("forward", "output", "velocity", 1, "true or false"),
    ("maps", "dce", "model", "tofts2", '"tofts", "extended_tofts", "patlak", "2cxm", "2cum"'),
    ("maps", "dce", "aif", "human", '"parker", "preclinical", "measured"'),
    ("maps", "dce", "fit_delay", "yes", "true or false"),
    ("maps", "cest", "mt", 0, "true or false"),
    ("invert", "training", "dtype", "float16", '"float32" or "float64"'),
    ("invert", "training", "device", "gpu", '"cpu" or "cuda"'),
    ("invert", "training", "balance", "some", '"residuals", "all", "none"'),
    ("invert", "training", "residual_form", "mixed", '"strong" or "weak"'),
    ("invert", "training", "warm_start", "truth", '"none" (untrained networks) or "fem" (networks fitted to a FEM '
                                                  "solve at the unknowns' start values)"),
    ("invert", "problem", "kind", "flow", '"ifp", "release", "coupled"'),
    ("invert", "unknowns.effective_pressure", "log", 0, "true or false"),
    ("transport", "time", "order", True, "1 (backward Euler) or 2 (BDF2)"),
    ("transport", "time", "adaptive", 1, "true or false"),
    ("transport", "drug", "formulation", "magic", '"free", "liposomal", "ph_sensitive", "thermosensitive"'),
    ("transport", "flow", "model", "stokes", '"none" or "darcy"'),
    ("transport", "free_drug", "uptake", "michaelis", '"linear" or "el_kareh_secomb"'),
    ("transport", "plasma", "dose_unit", "mg", '"mg/kg" or "mg/m^2"'),
])
def test_every_schema_refuses_a_value_outside_its_choices(schema, section, key, value, allowed):
    """Each schema's choices go through the one validator: the loader's error is the file, then
    ``[section] key must be <allowed>, got <value>``."""
    document, load = LOADERS[schema]
    document = copy.deepcopy(document())
    table = document
    for name in section.split("."):
        table = table.setdefault(name, {})
    table[key] = value
    with pytest.raises(ConfigError) as error:
        load(document)
    assert re.fullmatch(rf"\S+\.toml: \[{re.escape(section)}\] {key} must be (one of )?{re.escape(allowed)}, "
                        rf"got {re.escape(repr(value))}( \(.*\))?", str(error.value)), str(error.value)
