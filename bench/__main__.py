"""Entry point: `python -m bench <scenario> ...` (see bench/cli.py and bench/README.md)."""
import sys

if sys.argv[1:2] == ["push"]:  # its own options: bench/push.py
    from .push import main as push_main
    sys.exit(push_main(sys.argv[2:]))

from .cli import main  # noqa: E402

sys.exit(main())
