"""The override table (lambdad/functions/overrides.py) against the places it feeds: the
proto's ConfigOverrides, lambdactl's deploy and config flags, the servicer's conversion
and apply_overrides. A setting carried wrong anywhere on the way fails here."""

from __future__ import annotations

import dataclasses

import pytest

from lambdactl.commands.deploy import _overrides as cli_overrides
from lambdactl.parser import build_parser
from lambdad.api import convert
from lambdad.api.v1 import functions_pb2 as pb
from lambdad.functions import FunctionConfig, Overrides, Scaling
from lambdad.functions.manifest import apply_overrides
from lambdad.functions.overrides import OVERRIDE_FIELDS, SETTING_FIELDS, OverrideField

# A value each setting can take that differs from FunctionConfig's default, as typed.
VALUES = {"timeout_s": ("17", 17), "memory_mb": ("300", 300), "cpu": ("0.25", 0.25),
          "concurrency": ("4", 4), "min_instances": ("2", 2), "max_instances": ("9", 9),
          "idle_timeout_s": ("61", 61), "handler": ("app.run", "app.run"),
          "network": ("bridge", "bridge")}


def test_the_table_names_every_config_overrides_field_once() -> None:
    fields = [f.name for f in pb.ConfigOverrides.DESCRIPTOR.fields]
    assert sorted(f.field for f in OVERRIDE_FIELDS) == sorted(fields)
    assert len({f.flag for f in OVERRIDE_FIELDS}) == len(OVERRIDE_FIELDS)
    for setting in SETTING_FIELDS:  # unset must differ from zero: `--min-instances 0`
        assert pb.ConfigOverrides.DESCRIPTOR.fields_by_name[setting.field].has_presence


def test_each_setting_replaces_a_config_attribute() -> None:
    config_fields = {f.name for f in dataclasses.fields(FunctionConfig)}
    scaling_fields = {f.name for f in dataclasses.fields(Scaling)}
    for setting in OVERRIDE_FIELDS:
        assert setting.attr in (scaling_fields if setting.scaling else config_fields), setting
    assert set(VALUES) == {f.attr for f in SETTING_FIELDS}


@pytest.mark.parametrize("command", ["deploy", "config"])
@pytest.mark.parametrize("setting", SETTING_FIELDS, ids=lambda s: s.flag)
def test_a_flag_travels_to_the_config_it_changes(command: str, setting: OverrideField) -> None:
    text, value = VALUES[setting.attr]
    args = build_parser().parse_args([command, "fn", setting.flag, text])
    request = cli_overrides(args)
    assert request.ListFields() == [(pb.ConfigOverrides.DESCRIPTOR.fields_by_name[
        setting.field], value)]
    received = convert.overrides(pb.ConfigOverrides.FromString(request.SerializeToString()))
    assert received == Overrides(**{setting.attr: value})
    base = FunctionConfig(env={"A": "1"})
    merged = apply_overrides(base, received)
    where = merged.scaling if setting.scaling else merged
    assert getattr(where, setting.attr) == value
    # Nothing else moved.
    if setting.scaling:
        merged = dataclasses.replace(merged, scaling=base.scaling)
    else:
        merged = dataclasses.replace(merged, **{setting.attr: getattr(base, setting.attr)})
    assert merged == base


def test_env_flags_add_to_the_manifest_env() -> None:
    args = build_parser().parse_args(["deploy", "fn", "--env", "B=3", "--env", "C=x=y"])
    received = convert.overrides(cli_overrides(args))
    assert received == Overrides(env={"B": "3", "C": "x=y"})
    merged = apply_overrides(FunctionConfig(env={"A": "1", "B": "2"}), received)
    assert merged.env == {"A": "1", "B": "3", "C": "x=y"}


def test_no_flag_changes_nothing() -> None:
    args = build_parser().parse_args(["config", "fn"])
    request = cli_overrides(args)
    assert request.ListFields() == []
    base = FunctionConfig(handler="a.b", cpu=2.0, scaling=Scaling(min_instances=1))
    assert apply_overrides(base, convert.overrides(request)) == base


def test_overrides_refuse_a_name_that_is_not_a_setting() -> None:
    with pytest.raises(TypeError, match="timeout"):
        Overrides(timeout=5)
    assert Overrides(timeout_s=None) == Overrides()
