"""``python -m helpers <command>``: see :mod:`helpers.course.cli`."""

import sys

from .course.cli import main

if __name__ == "__main__":
    sys.exit(main())
