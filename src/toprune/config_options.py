"""``toprune prune``'s options generated from :class:`toprune.prune_config.PruneConfig` (each field's metadata:
help, flag, type, choices, group), and the config built back from the parsed options: defaults and choice lists are
written in the config only."""

from __future__ import annotations

import argparse
from dataclasses import fields

from .cli_types import KINDS
from .prune_config import PruneConfig


def _options():
    """(field, its metadata, the option's dest) of every field that has an option."""
    for f in fields(PruneConfig):
        meta = f.metadata
        if "help" not in meta:
            continue
        dest = f"no_{f.name}" if meta.get("negate") else meta.get("flag", f"--{f.name}").lstrip("-").replace("-", "_")
        yield f, meta, dest


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """One option per config field with ``help``; fields of a ``group`` share an argument group."""
    groups: dict[str, argparse._ArgumentGroup] = {}
    for f, meta, dest in _options():
        target = parser
        if meta.get("group"):
            target = groups.setdefault(meta["group"], parser.add_argument_group(meta["group"]))
        flag = "--" + dest.replace("_", "-")
        text = meta["help"]() if callable(meta["help"]) else meta["help"]
        if f.type in ("bool", bool):
            target.add_argument(flag, action="store_true", dest=dest, help=text)
            continue
        kwargs = {"help": text, "dest": dest}
        if meta.get("kind"):
            kwargs["type"] = KINDS[meta["kind"]]
        if meta.get("choices"):
            kwargs["choices"] = meta["choices"]
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        kwargs["default"] = f.default  # None: the config resolves it (task defaults)
        target.add_argument(flag, **kwargs)


def option_default(dest: str):
    """The config's default behind an option (``False`` for a switch)."""
    for f, _, name in _options():
        if name == dest:
            return False if f.type in ("bool", bool) else f.default
    raise KeyError(dest)


def config_values(args: argparse.Namespace) -> dict:
    """The config fields the parsed options set."""
    values = {}
    for f, meta, dest in _options():
        if not hasattr(args, dest):
            continue
        value = getattr(args, dest)
        if meta.get("negate"):
            value = not value
        for name in (f.name, *meta.get("also", ())):
            values[name] = value
    return values
