"""The command-line tools: ``nasdet-<tool>`` commands, and ``tools/<tool>.py`` in a checkout.

Each module exposes ``main(argv=None) -> int`` (argparse over the package's functions;
a :class:`~nasdet.errors.NasdetError` propagates) and ``run()``, the console entry point
that turns such an error into one ``error: ...`` line and exit status 2.
"""
