"""The subcommands of ``fcm``, one module each: ``HELP`` and ``DESCRIPTION`` (its ``--help``),
``add_arguments`` (its arguments) and ``run`` (what it does).
"""
