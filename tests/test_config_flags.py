"""Config fields on the command line: every bool is a --x/--no-x pair, an optional bool stays None (automatic)."""

from __future__ import annotations

import argparse
import dataclasses
import typing

import pytest

from ghostnet.engine.config import add_config_arguments, config_from_args
from ghostnet.tasks.classify.config import TrainConfig
from ghostnet.tasks.detect.config import DetectConfig


def _parse(cls: type, *argv: str) -> typing.Any:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    return config_from_args(parser.parse_args(list(argv)), cls)


@pytest.mark.parametrize(("argv", "expected"), [((), None), (("--frozen-bn",), True), (("--no-frozen-bn",), False)])
def test_frozen_bn_is_a_flag_pair_with_automatic_default(argv: tuple[str, ...], expected: bool | None) -> None:
    cfg = _parse(DetectConfig, *argv)
    assert cfg.frozen_bn is expected
    assert cfg.detector_options()["frozen_bn"] is expected


def test_frozen_bn_takes_no_value() -> None:
    with pytest.raises(SystemExit):
        _parse(DetectConfig, "--frozen-bn", "false")


@pytest.mark.parametrize("cls", [TrainConfig, DetectConfig])
def test_every_bool_field_is_a_flag_pair(cls: type) -> None:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, cls)
    options = {s for a in parser._actions for s in a.option_strings}
    hints = typing.get_type_hints(cls)
    bools = [f.name for f in dataclasses.fields(cls) if hints[f.name] in (bool, bool | None)]
    assert bools
    for name in bools:
        flag = "--" + name.replace("_", "-")
        assert flag in options and "--no-" + flag[2:] in options, flag
