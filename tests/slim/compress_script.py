"""Runs ``paddlex_seg compress`` in its own process, for the test that kills it.

Usage (see tests/slim/test_compress.py)::

    python -u tests/slim/compress_script.py --pause_at 2_pruned/epoch_1 \
        --ratios 0.2 0.5 -- <arguments of paddlex_seg compress>

``--ratios`` sets the sensitivity ratios (as the tests do in-process, to keep them
short). ``--pause_at STAGE/epoch_N`` makes the run print ``PAUSED <path>`` and sleep
once that checkpoint of that stage's training has been written, so the test can
SIGKILL it in the middle of the stage.
"""
import argparse
import os
import sys
import time

from paddlex_seg import cli, segmenter
from paddlex_seg.engine.train import Trainer


def pause_after(stage, checkpoint, seconds=120.0):
    real_save = Trainer._save

    def save(self, name, metrics):
        path = real_save(self, name, metrics)
        if name == checkpoint and os.path.basename(os.path.dirname(self.config.save_dir)) == stage:
            print(f"PAUSED {path}", flush=True)
            time.sleep(seconds)
        return path

    Trainer._save = save


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pause_at", default=None, metavar="STAGE/epoch_N")
    parser.add_argument("--ratios", type=float, nargs="+", default=None)
    parser.add_argument("rest", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.ratios:
        segmenter.SENSITIVITY_RATIOS = tuple(args.ratios)
    if args.pause_at:
        pause_after(*args.pause_at.split("/"))
    rest = args.rest[1:] if args.rest[:1] == ["--"] else args.rest
    status = cli.main(["compress"] + rest)
    print(f"EXIT {status}", flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
