#!/usr/bin/env python
"""Django's command-line utility; the project root is the import root (backend.*, workers.*, realtime.*)."""
import sys


def main() -> None:
    from backend.common.entrypoint import require_settings_module

    require_settings_module()
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
