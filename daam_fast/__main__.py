"""``python -m daam_fast`` == the ``daam-fast`` command."""
import sys

from .cli import main

sys.exit(main())
