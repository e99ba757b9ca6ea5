"""Command line of the paper experiments: `python -m hf_ldro.experiments <experiment> [options]`."""

from __future__ import annotations

import sys

from . import table1

EXPERIMENTS = {"table1": table1.main}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m hf_ldro.experiments {" + ",".join(EXPERIMENTS) + "} [options]")
        print("  table1  multilingual language modelling: the paper's Table 1 (--help for options)")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in EXPERIMENTS:
        print(
            f"python -m hf_ldro.experiments: error: unknown experiment {name!r}; "
            f"choose one of {sorted(EXPERIMENTS)}.",
            file=sys.stderr,
        )
        return 2
    return EXPERIMENTS[name](rest)


if __name__ == "__main__":
    sys.exit(main())
