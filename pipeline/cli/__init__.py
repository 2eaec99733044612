"""The ``grar`` command: ``main`` (the parser, ``--params`` and ``--set``), then one module per subcommand.

A subcommand's module defines ``HELP``, ``DESCRIPTION``, ``add_arguments(parser)``
and ``run(args)``; its work lives in the folder of its concern, imported inside
``run`` so that ``grar --help`` stays fast. May import every package.
"""
