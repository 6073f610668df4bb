#!/usr/bin/env python3
"""Command-line entry point of the hand tracker (see `python run_tracker.py --help`)."""

from tracker.cli import console_main

if __name__ == "__main__":
    raise SystemExit(console_main())
