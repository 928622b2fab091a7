import sys

from embetter.cli import main

sys.exit(main())
