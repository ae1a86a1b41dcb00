"""`python -m midtrain.train.entry RUN.json [--no-resume]`: what each torchrun rank executes."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from midtrain.errors import MidtrainError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="midtrain.train.entry")
    parser.add_argument("spec", type=Path)
    parser.add_argument("--no-resume", action="store_true")
    args = parser.parse_args(argv)
    from midtrain.quiet import quiet_third_party

    quiet_third_party(Path(os.environ.get("MIDTRAIN_LOG_DIR", "logs")))
    from midtrain.train.distributed import teardown
    from midtrain.train.loop import run_from_file

    try:
        run_from_file(args.spec, resume=not args.no_resume)
    except MidtrainError as exc:
        print(f"error: {exc.render()}", file=sys.stderr, flush=True)
        return 2
    except OSError as exc:
        from midtrain.io import os_error

        print(f"error: {os_error(exc).render()}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("interrupted; rerun the same command to resume from the last checkpoint", file=sys.stderr, flush=True)
        return 130
    finally:
        teardown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
