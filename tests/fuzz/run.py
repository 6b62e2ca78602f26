"""Coverage-guided fuzzing of one target of tests/fuzz/targets.py with atheris (libFuzzer).

    python -m tests.fuzz.run TARGET [libFuzzer flags] [corpus dirs]

With no corpus directory given, tests/fuzz/corpus/TARGET is used: new inputs that reach new
code are added there, so run it on a copy when you do not want to keep them. A crash (any
exception other than the target's documented errors) is written to crash-<sha1> (or
-artifact_prefix) and the process exits non-zero. tests/fuzz/test_atheris.py runs each target
for a few seconds; docs in tests/fuzz/README.md say how to run them longer.
"""
from __future__ import annotations

import sys
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["switchboard"]):
    from tests.fuzz.targets import TARGETS

CORPUS = Path(__file__).parent / "corpus"


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in TARGETS:
        sys.exit(f"usage: python -m tests.fuzz.run {{{','.join(TARGETS)}}} [libFuzzer flags]")
    name, rest = argv[1], argv[2:]
    if not any(not arg.startswith("-") for arg in rest):
        rest.append(str(CORPUS / name))
    atheris.Setup([argv[0], *rest], TARGETS[name])
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
