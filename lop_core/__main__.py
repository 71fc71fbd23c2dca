import sys

from lop_core.cli import main

sys.exit(main())
