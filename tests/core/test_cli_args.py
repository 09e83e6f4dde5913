"""One --device option for every verb (commands/_args.py)."""

from __future__ import annotations

import argparse

import pytest

from napari_dlcb.cli import build_parser
from napari_dlcb.commands._args import device_name


def _device_actions(parser: argparse.ArgumentParser, path=()):
    for action in parser._actions:
        if "--device" in action.option_strings:
            yield " ".join(path), action
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _device_actions(sub, (*path, name))


def test_every_verb_shares_one_device_option():
    found = dict(_device_actions(build_parser()))
    assert len(found) >= 12  # train/predict/tune/interpret verbs of every task
    assert {a.type for a in found.values()} == {device_name}
    assert {a.default for a in found.values()} == {"auto"}
    assert {a.metavar for a in found.values()} == {"{auto,cpu,cuda,cuda:N,mps}"}


@pytest.mark.parametrize("text", ["auto", "CPU", "cuda", "cuda:1", "mps"])
def test_device_names_are_accepted(text):
    assert device_name(text) == text.lower()


@pytest.mark.parametrize("text", ["tpu", "cuda:x", "mps:1", "cpu:0", ""])
def test_other_device_names_are_one_line_errors(text):
    with pytest.raises(argparse.ArgumentTypeError, match="invalid choice"):
        device_name(text)
