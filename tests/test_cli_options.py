"""Command-line flags derived from options dataclasses (daam_fast.cli.options.add_options): the
derivation itself, and for every entry point, the CLI's defaults equal its dataclass's."""
import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest

from daam_fast.cli import build_parser
from daam_fast.cli.options import DAAMOptions, add_options, default_of, from_args, to_argv

# The entry points whose flags come from one options dataclass each.
ENTRY_POINTS = ("explain", "video", "eval", "batch")


def _subparser(command: str) -> argparse.ArgumentParser:
    ap = build_parser()
    sub = next(a for a in ap._actions if isinstance(a, argparse._SubParsersAction))
    if command not in sub.choices:
        pytest.skip(f"daam-fast {command} cannot be imported here: {ap.epilog}")
    return sub.choices[command]


def _minimal_argv(p: argparse.ArgumentParser) -> list:
    """A command line with a value for each required argument and nothing else."""
    argv = []
    for a in p._actions:
        if not a.option_strings and a.nargs != 0 and not isinstance(a, argparse._SubParsersAction):
            argv.append("x")
        elif a.required:
            argv += [a.option_strings[0], "x"]
    return argv


@pytest.mark.parametrize("command", ENTRY_POINTS)
def test_cli_defaults_are_the_options_defaults(command):
    p = _subparser(command)
    derived = [a for a in p._actions if hasattr(a, "options_field")]
    classes = {a.options_field[0] for a in derived} - {DAAMOptions}
    assert classes, f"daam-fast {command}: its flags are not derived from its options dataclass (add_options)"
    ns = p.parse_args(_minimal_argv(p))
    checked = 0
    for cls in classes | {DAAMOptions}:
        for f in dataclasses.fields(cls):
            if not hasattr(ns, f.name):
                continue
            # every flag of this command with a field's name, derived or written by hand, has its default
            assert getattr(ns, f.name) == default_of(cls, f.name), f"{command} --{f.name} vs {cls.__name__}"
            checked += 1
        inst = from_args(cls, ns)
        assert inst == cls(**{f.name: getattr(inst, f.name) for f in dataclasses.fields(cls)})
    assert checked >= len(derived)


@dataclass
class _Toy:
    steps: int = field(default=4, metadata={"help": "steps (default %(default)s)"})
    name: Optional[str] = None
    scale: float = 0.5
    order: Literal["pixel", "patch"] = "pixel"
    method: str = field(default="b", metadata={"choices": lambda: ("a", "b")})
    fast: bool = False
    audio: bool = True
    checkpoint: bool = field(default=False, metadata={"flag": "--activation-checkpointing"})
    blocks: tuple = field(default=(1, 2), metadata={"type": lambda s: tuple(int(t) for t in s.split(","))})
    hidden: dict = field(default_factory=dict, metadata={"cli": False})


def test_add_options_flags_types_and_defaults():
    p = argparse.ArgumentParser()
    actions = add_options(p, _Toy)
    assert {a.dest for a in actions} == {f.name for f in dataclasses.fields(_Toy)} - {"hidden"}
    assert all(a.options_field[0] is _Toy for a in actions)
    ns = p.parse_args([])
    assert from_args(_Toy, ns) == _Toy()
    ns = p.parse_args(["--steps", "7", "--name", "n", "--scale", "2", "--order", "patch", "--method", "a", "--fast",
                       "--no-audio", "--activation-checkpointing", "--blocks", "3,4"])
    assert from_args(_Toy, ns) == _Toy(steps=7, name="n", scale=2.0, order="patch", method="a", fast=True,
                                       audio=False, checkpoint=True, blocks=(3, 4))
    for bad in (["--order", "row"], ["--method", "c"], ["--steps", "x"]):
        with pytest.raises(SystemExit):
            p.parse_args(bad)
    assert "steps (default 4)" in p.format_help()


def test_to_argv_gives_the_options_back():
    p = argparse.ArgumentParser()
    add_options(p, _Toy)
    for opts in (_Toy(), _Toy(steps=7, name="n", scale=2.5, order="patch", fast=True, audio=False, checkpoint=True,
                              blocks=(3, 4))):
        assert from_args(_Toy, p.parse_args(to_argv(opts))) == opts
    argv = to_argv(_Toy(audio=False, checkpoint=True))
    assert "--no-audio" in argv and "--activation-checkpointing" in argv and "--fast" not in argv
    assert "--name" not in argv and "hidden" not in " ".join(argv)          # None and cli=False left out
    from daam_fast.evaluate.config import EvalOptions
    p = argparse.ArgumentParser()
    add_options(p, EvalOptions)
    opts = EvalOptions(methods=("grad", "rollout"), num_images=4, target="label", tolerance=2.5)
    assert from_args(EvalOptions, p.parse_args(to_argv(opts))) == opts


def test_add_options_only_exclude_and_untyped_fields():
    p = argparse.ArgumentParser()
    assert [a.dest for a in add_options(p, _Toy, only=("steps", "fast"))] == ["steps", "fast"]
    p = argparse.ArgumentParser()
    assert "steps" not in {a.dest for a in add_options(p, _Toy, exclude=("steps",))}

    @dataclass
    class Untyped:
        table: dict = field(default_factory=dict)
    with pytest.raises(TypeError, match="Untyped.table: no flag type"):
        add_options(argparse.ArgumentParser(), Untyped)


def test_daam_options_are_derived():
    p = _subparser("explain")
    ns = p.parse_args(_minimal_argv(p) + ["--activation-checkpointing", "--backend", "torch"])
    assert from_args(DAAMOptions, ns) == DAAMOptions(activation_checkpointing=True, backend="torch")
    assert default_of(DAAMOptions, "method") == "grad"


def test_finish_prints_failures_and_gives_the_exit_code(capsys):
    from daam_fast.cli.options import EXIT_FAILED, EXIT_OK, finish
    assert finish([], "done 2") == EXIT_OK
    assert finish([("a.png", "truncated")], "done 1, failed 1") == EXIT_FAILED
    out = capsys.readouterr()
    assert out.out == "done 2\ndone 1, failed 1\n" and out.err == "failed: a.png: truncated\n"


def test_refuse_existing_names_the_flag(tmp_path):
    from daam_fast.cli.options import UsageError, refuse_existing
    out = tmp_path / "o.mp4"
    refuse_existing(str(out), overwrite=False)                   # nothing there yet
    out.write_bytes(b"")
    refuse_existing(str(out), overwrite=True)
    with pytest.raises(UsageError, match="exists: pass --overwrite"):
        refuse_existing(str(out), overwrite=False)
