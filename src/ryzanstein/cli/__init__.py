"""The `ryzanstein` command line: generate, chat, models, profile, bench, serve, distill.

One module per command (generate.py, chat.py, models.py, profile.py, bench.py, serve.py, distill.py), each
with its parser (`add_parser`) and its `cmd_*`; the flags shared by several commands are in args.py; main.py
builds the parser and turns every error into one line on stderr. This is the only package that imports
argparse: the library below it takes configs and plain values.
"""
from .main import main

__all__ = ["main"]
